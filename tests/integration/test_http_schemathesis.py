"""Schemathesis against the live shim, from docs/openapi.yaml: requests generated from the
document -- valid ones and, on purpose, invalid ones -- sent to `jobd http` in front of a real
`jobd run` on PostgreSQL, and every response checked against the document.

Bounded: GENERATION_EXAMPLES per operation (ten operations), plus the deterministic cases of
schemathesis's coverage phase -- a few hundred requests in all, some seconds of run time.

Every default check runs, among them: no 5xx (`not_a_server_error`: the daemon is up, so not
even the documented 503 is expected), status codes, content types, headers and bodies as
documented, invalid data rejected, secured operations refusing a missing token, 405 with Allow
for a method an operation lacks.  One allowance, made in the configuration below: a request
the document calls valid may still be refused with 400 or 422 (`positive_data_acceptance`),
because some rules cannot be written in JSON Schema without restating the daemon -- the job
types a daemon runs are its configuration (422), a cursor is opaque, `run_at` and `delay`
exclude each other, names must be printable (400).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from control_harness import ROOT, running_daemon
from hypothesis import HealthCheck, settings

from .test_http import Shim, start_shim

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.config import SchemathesisConfig  # noqa: E402

pytestmark = pytest.mark.postgres

TOKEN = "schemathesis-" + uuid.uuid4().hex
# Per operation; JOBD_TEST_SCHEMATHESIS_EXAMPLES=500 for a deeper run by hand.
GENERATION_EXAMPLES = int(os.environ.get("JOBD_TEST_SCHEMATHESIS_EXAMPLES", "25"))
MAX_WAIT = 0.2  # long polls are cut short: only what they answer is under test here

CONFIG = SchemathesisConfig.from_dict(
    {
        # The token for the document's bearerAuth scheme: schemathesis sends it, and also
        # leaves it out or garbles it to check that the shim refuses those requests.
        "auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}},
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "404", "409", "422"]
            }
        },
    }
)
schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml", config=CONFIG)


@pytest.fixture(scope="module")
def live_shim(pg_url: str) -> Iterator[Shim]:
    schema_name = f"jobd_http_st_{uuid.uuid4().hex[:8]}"
    with running_daemon(pg_url, schema_name, workers=2) as daemon:
        shim = start_shim(daemon, {"JOBD_HTTP_TOKENS": TOKEN}, name="schemathesis")
        try:
            yield shim
        finally:
            code = shim.stop()
            assert code == 0, shim.log()[-5000:]
            assert TOKEN not in shim.log()


@schema.parametrize()
@settings(
    max_examples=GENERATION_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_live_shim_keeps_to_its_document(case: Any, live_shim: Shim) -> None:
    if isinstance(case.query, dict) and case.path.endswith("/wait"):
        timeout = case.query.get("timeout")
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            case.query["timeout"] = min(timeout, MAX_WAIT)
    case.call_and_validate(base_url=live_shim.url, timeout=30)
