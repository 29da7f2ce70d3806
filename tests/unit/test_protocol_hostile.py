"""Protocol input that once took a connection down: numbers past the largest float.  (Found by
tests/integration/test_fuzz_control.py: an id of 10**400 raised OverflowError out of
parse_call and the daemon dropped the connection with a traceback in its log; a `delay` of
10**400 came back as internal_error.)"""

from __future__ import annotations

import pytest

from jobd.errors import InvalidParams, ParseError
from jobd.protocol import Call, decode, parse_call, parse_params

HUGE = 10**400  # an integer no float can hold


@pytest.mark.parametrize("call_id", [HUGE, -HUGE, 2**64])
def test_an_integer_id_of_any_size_is_an_id(call_id: int) -> None:
    call = parse_call({"jsonrpc": "2.0", "id": call_id, "method": "hello"})
    assert call.id == call_id and not call.notification


@pytest.mark.parametrize("field", ["delay", "timeout"])
def test_a_number_past_any_float_is_invalid_params_naming_the_field(field: str) -> None:
    call = Call("submit", {"type": "echo", field: HUGE}, 1)
    with pytest.raises(InvalidParams) as caught:
        parse_params(call)
    assert caught.value.data["field"] == field
    assert "out of range" in caught.value.message


def test_a_wait_timeout_past_any_float_is_invalid_params() -> None:
    with pytest.raises(InvalidParams, match="timeout"):
        parse_params(Call("wait", {"id": 1, "timeout": HUGE}, 1))


@pytest.mark.parametrize(
    "line",
    [
        rb'{"jsonrpc": "2.0", "id": 1, "method": "submit", "params": {"correlation_id": "\ud800"}}',
        rb'{"jsonrpc": "2.0", "id": "\udfff", "method": "hello"}',
        rb'{"jsonrpc": "2.0", "id": 1, "method": "x\ud800"}',
        rb'{"\ud800": 1}',
    ],
)
def test_an_unpaired_surrogate_is_a_parse_error(line: bytes) -> None:
    """JSON's syntax allows "\\ud800" but no Unicode text holds it.  (Found by the fuzz: such a
    correlation id, idempotency key or list filter was an internal_error with a traceback
    (psycopg cannot encode it), and in an id or a method name it broke the reply and dropped
    the connection.)"""
    with pytest.raises(ParseError, match="unpaired surrogate"):
        decode(line)


def test_a_surrogate_pair_is_a_character() -> None:
    assert decode(rb'{"a": "\ud83d\ude00", "b": "\\ud800"}') == {"a": "😀", "b": "\\ud800"}
