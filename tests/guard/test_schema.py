"""schemathesis against the gateway's own OpenAPI schema: no 500s, and no request without a
valid key ever reaches the upstream."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from retort.guard.app import create_app
from tests.guard.conftest import POLICY, new_key
from tests.servers import FaultServer

OK = {"choices": [{"index": 0, "text": "x"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


@pytest.fixture(scope="module")
def app_and_key(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schema")
    policy = folder / "guard.yaml"
    policy.write_text(POLICY)
    db = folder / "guard.sqlite"
    key = new_key(db, "research")
    with FaultServer(lambda body: ("ok", OK)) as upstream:
        yield create_app(upstream, policy, db), key


def run_cases(app, headers: dict[str, str], check) -> int:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen = 0
    for operation in schema.get_all_operations():
        operation = operation.ok()
        strategy = operation.as_strategy()

        @settings(
            max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def test(case) -> None:
            nonlocal seen
            response = case.call(headers=headers)
            check(case, response)
            seen += 1

        from hypothesis import given

        given(strategy)(test)()
    return seen


def test_no_server_errors_with_a_valid_key(app_and_key):
    app, key = app_and_key

    def check(case, response) -> None:
        assert response.status_code < 500 or response.status_code in (502, 504), (
            case.path,
            response.text,
        )

    assert run_cases(app, {"authorization": f"Bearer {key}"}, check) > 0


@pytest.mark.parametrize(
    "header", [None, "Bearer rk-000000000000-abcdefghijklmnopqrstuvwxyz", "Basic abc", "Bearer "]
)
def test_no_auth_bypass(app_and_key, header):
    app, _ = app_and_key

    def check(case, response) -> None:
        if case.path.startswith("/v1/"):
            assert response.status_code == 401, (case.path, response.text)

    run_cases(app, {"authorization": header} if header else {}, check)
