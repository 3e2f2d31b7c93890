"""Bad policy files fail in one line naming the key; reload keeps the old policy on error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from retort.errors import ConfigError
from retort.guard.controls import Refused, apply_request
from retort.guard.policy import Tier, load_policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tiers: {free: {requests_per_minut: 5}}",
            "tiers.free.requests_per_minut: unknown key "
            "'requests_per_minut'; did you mean 'requests_per_minute'?",
        ),
        ("tiers: {free: {logprobs: {top_kk: 2}}}", "did you mean 'top_k'?"),
        ("tierz: {}", "unknown key 'tierz'; did you mean 'tiers'?"),
        (
            "tiers: {free: {max_n: 0}}",
            "tiers.free.max_n: Input should be greater than or equal to 1",
        ),
        ("tiers: [", "not valid YAML"),
    ],
)
def test_bad_policy_names_the_key(tmp_path, text, message):
    path = tmp_path / "guard.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text("tiers: {free: {concurent: 1}}")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "retort",
            "guard",
            "keys",
            "create",
            "--name",
            "a",
            "--tier",
            "free",
            "--db",
            str(tmp_path / "g.sqlite"),
            "--policy",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {path}: tiers.free.concurent: unknown key 'concurent'; did you mean 'concurrent'?"
    ]


def test_off_accepts_the_yaml_boolean(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text("tiers: {free: {logprobs: off}}")
    assert load_policy(path).tiers["free"].logprobs.enabled is False


def test_missing_max_tokens_is_filled_so_the_reservation_is_bounded():
    body = {"model": "m", "messages": []}
    apply_request(body, Tier(max_tokens=7), chat=True)
    assert body["max_tokens"] == 7
    with pytest.raises(Refused):
        apply_request({"model": "x"}, Tier(models=["m"]), chat=True)


def test_sighup_reload_keeps_old_policy_when_the_new_one_is_bad(tiny_server, tmp_path):
    from tests.guard.conftest import POLICY, gateway

    path, db = tmp_path / "guard.yaml", tmp_path / "g.sqlite"
    path.write_text(POLICY)
    with gateway(tiny_server, path, db) as (_, app):
        gw = app.state.gateway
        path.write_text(POLICY.replace("max_n: 2", "max_n: 3"))
        assert gw.reload() and gw.policy.tiers["research"].max_n == 3
        path.write_text("tiers: {oops: {bad_key: 1}}")
        assert not gw.reload() and gw.policy.tiers["research"].max_n == 3


def test_shipped_guard_recipe_validates_and_names_its_command():
    from pathlib import Path

    recipe = Path(__file__).parents[2] / "recipes" / "guard" / "guard.yaml"
    assert recipe.read_text().startswith(
        "# retort guard serve --upstream http://127.0.0.1:8000/v1 --policy recipes/guard/guard.yaml"
    )
    policy = load_policy(recipe)
    assert policy.tiers["free"].logprobs.enabled is False
    assert policy.tiers["pro"].logprobs.top_k == 5
