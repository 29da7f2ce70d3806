"""The dashboard's session cookies and CSRF tokens (jobd.http.ui.session), without a server."""

from __future__ import annotations

from email.message import Message

from jobd.http.access import Access, Tokens
from jobd.http.ui.session import SESSION_SECONDS, Sessions, cookies_of, same_origin


def sessions(now: float = 1_000_000.0, **tokens: tuple[str, ...]) -> Sessions:
    given = Tokens(tokens.get("write", ("rw-token",)), tokens.get("read", ("ro-token",)))
    return Sessions(given, secure=True, clock=lambda: now)


def test_a_session_grants_what_its_token_grants_until_it_expires() -> None:
    s = sessions()
    access, cookie = s.sign_in("rw-token")
    assert access is Access.WRITE and cookie is not None
    assert "rw-token" not in cookie
    assert s.check(cookie) is Access.WRITE
    _, read_cookie = s.sign_in("ro-token")
    assert s.check(read_cookie) is Access.READ
    assert sessions(now=1_000_000.0 + SESSION_SECONDS + 1).check(cookie) is Access.WRONG


def test_a_wrong_token_a_forged_cookie_or_a_removed_token_grant_nothing() -> None:
    s = sessions()
    assert s.sign_in("guess") == (Access.WRONG, None)
    _, cookie = s.sign_in("rw-token")
    assert cookie is not None
    head, _, signature = cookie.rpartition(".")
    assert s.check(f"{head}.{'0' * len(signature)}") is Access.WRONG
    version, expires, rest = cookie.split(".", 2)
    assert s.check(f"{version}.{int(expires) + 999}.{rest}") is Access.WRONG  # signed expiry
    assert s.check("") is Access.MISSING and s.check("v1.x") is Access.WRONG
    assert sessions(write=("another",)).check(cookie) is Access.WRONG


def test_cookies_are_http_only_strict_and_secure_unless_turned_off() -> None:
    s = sessions()
    cookie = s.session_cookie("value")
    assert all(part in cookie for part in ("HttpOnly", "SameSite=Strict", "Path=/ui/", "Secure"))
    plain = Sessions(Tokens(["t"]), secure=False).session_cookie("value")
    assert "Secure" not in plain


def test_csrf_tokens_are_bound_to_the_browsers_seed() -> None:
    s = sessions()
    seed = s.new_csrf_seed()
    token = s.csrf_token(seed)
    assert s.csrf_ok(seed, token)
    assert not s.csrf_ok(s.new_csrf_seed(), token)
    assert not s.csrf_ok(seed, "") and not s.csrf_ok(None, token)
    # The key comes from the tokens: another shim with the same tokens accepts the same form.
    assert sessions().csrf_ok(seed, token)
    open_shim = Sessions(Tokens([]), secure=True)
    assert open_shim.open and open_shim.csrf_ok(seed, open_shim.csrf_token(seed))


def _headers(**values: str) -> Message:
    message = Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


def test_same_origin_reads_what_the_browser_says() -> None:
    assert same_origin(_headers(Host="h:1"))
    assert same_origin(_headers(Host="h:1", Origin="http://h:1", Sec_Fetch_Site="same-origin"))
    assert not same_origin(_headers(Host="h:1", Origin="http://evil:1"))
    assert not same_origin(_headers(Host="h:1", Origin="null"))
    assert not same_origin(_headers(Host="h:1", Sec_Fetch_Site="cross-site"))


def test_cookies_are_read_from_every_cookie_header() -> None:
    headers = _headers(Cookie="a=1; b=2")
    headers["Cookie"] = "c=3; a=9"
    assert cookies_of(headers) == {"a": "1", "b": "2", "c": "3"}
