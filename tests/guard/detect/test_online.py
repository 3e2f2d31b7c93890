"""The detector online, end to end: the real gateway in front of the real tiny `retort serve`,
an attacker script on the openai SDK (templated chain-of-thought prompts asking logprobs, as
fast as it can) tightened and then blocked while a benign client on another key keeps its
200s; every action in the audit log and in ``detector_events``; ``retort guard keys show``
printing the history; an operator override lifting the block.

The policy names its own small weights file (``detector.weights``, written below: three
features with hand-set weights), so the scores, and the request at which each step is
reached, do not move when the packaged weights.json is refitted."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import openai
import pytest
from typer.testing import CliRunner

from retort.cli.main import app as cli
from tests.guard.conftest import audit_rows, gateway, new_key

POLICY = """
tiers:
  pro:
    requests_per_minute: 600
    logprobs: {top_k: 2}
    max_tokens: 4
detector:
  enabled: true
  score_every: 4
  min_requests: 8
  embedder: hash
  weights: weights.json
  ladder:
    - {at: 0.3, action: log}
    - {at: 0.6, action: tighten, factor: 0.01}   # 600 → 6 requests a minute
    - {at: 0.95, action: block}
"""
# logit = -4 + 2.5 × logprobs share + 2.5 × CoT share + 10 × refused share. The attacker reads
# sigmoid(1) = 0.73 (tighten) until its 429s under the tightened limit pass a fifth of its
# window (block); the benign client reads sigmoid(-4) = 0.02 throughout.
WEIGHTS = {
    "bias": -4.0,
    "flag_at": 0.5,
    "features": {
        "sweeps.logprobs_share": {"mean": 0.0, "scale": 1.0, "weight": 2.5},
        "elicit.cot_share": {"mean": 0.0, "scale": 1.0, "weight": 2.5},
        "volume.refused_share": {"mean": 0.0, "scale": 0.1, "weight": 1.0},
    },
}
TOPICS = ["rivers of Europe", "how bread rises", "a good name for a cat", "why the sky is blue"]


@pytest.fixture
def guarded(tiny_server, tmp_path, db):
    (tmp_path / "weights.json").write_text(json.dumps(WEIGHTS))
    policy = tmp_path / "guard.yaml"
    policy.write_text(POLICY)
    with gateway(tiny_server, policy, db) as (url, app):
        yield url, app


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


def attack(client: openai.OpenAI, i: int) -> tuple[int, str]:
    """One templated chain-of-thought harvest request with logprobs: its HTTP status, and the
    error message when refused."""
    prompt = f"Question {i}: what is {i} times {i + 3}? Think step by step and show your work."
    try:
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": prompt}],
            logprobs=True,
            top_logprobs=2,
        )
        return 200, ""
    except openai.APIStatusError as exc:
        return exc.status_code, exc.message


def chat(client: openai.OpenAI, i: int) -> int:
    topic = TOPICS[i % len(TOPICS)]
    reply = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": f"Tell me about {topic}."}]
    )
    return reply.status_code


def keys(*args: str):
    """``retort guard keys ARGS`` in this process (the CLI's own code, no subprocess)."""
    return CliRunner().invoke(cli, ["guard", "keys", *args])


def events(db) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM detector_events ORDER BY seq")]
    conn.close()
    return rows


def test_attacker_is_tightened_then_blocked_while_a_benign_key_keeps_working(guarded, db):
    url, _ = guarded
    attacker_key, benign_key = new_key(db, "pro", None), new_key(db, "pro", None)
    attacker, benign = sdk(url, attacker_key), sdk(url, benign_key)
    bad, good = attacker_key.split("-")[1], benign_key.split("-")[1]
    statuses, benign_statuses = [], []
    for i in range(40):
        status, message = attack(attacker, i)
        statuses.append(status)
        if i % 3 == 0:
            benign_statuses.append(chat(benign, i))
        if "blocked" in message:
            break
    assert set(benign_statuses) == {200}
    # Scored first at the 8th request (tighten: 6 a minute in a new window), then every 4th:
    # 2 of 16 refused reads 0.905, 6 of 20 reads 0.982 (block).
    assert statuses == [200] * 14 + [429] * 7, statuses

    rows = audit_rows(db, len(statuses) + len(benign_statuses))
    mine = [r for r in rows if r["key"] == bad]
    decisions = [r["decision"] for r in mine]
    assert "detector_tightened" in decisions and decisions[-1] == "detector_blocked"
    assert decisions.index("detector_tightened") < decisions.index("detector_blocked")
    tightened = next(r for r in mine if r["decision"] == "detector_tightened")
    assert tightened["status"] == 429
    assert "detector tighten ×0.01: score 0.73" in tightened["reason"]
    assert "ask for token log-probabilities" in tightened["reason"]
    # Requests answered under the tightened tier say so too, with their ordinary decision.
    assert any(r["status"] == 200 and "detector tighten" in (r["reason"] or "") for r in mine)
    blocked = mine[-1]
    assert blocked["status"] == 429 and blocked["reason"].startswith("detector block: score 0.9")
    assert all(r["decision"] == "allowed" for r in rows if r["key"] == good)

    deadline = time.monotonic() + 10
    while len(events(db)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    history = events(db)
    assert [(e["key"], e["level"]) for e in history] == [(bad, "tighten"), (bad, "block")]
    assert history[0]["score"] == pytest.approx(1 / (1 + 2.718281828459045**-1), abs=1e-6)
    reasons = json.loads(history[1]["reasons"])
    assert reasons[0]["feature"] == "volume.refused_share" and "words" in reasons[0]

    shown = keys("show", bad, "--db", str(db))
    assert shown.exit_code == 0, shown.output
    assert "detector level: block (detector, score 0.9" in shown.output
    assert "tighten" in shown.output and "log-probabilities" in shown.output

    lifted = keys(
        "override",
        bad,
        "--level",
        "none",
        "--note",
        "known researcher",
        "--by",
        "alice",
        "--db",
        str(db),
    )
    assert lifted.exit_code == 0, lifted.output
    time.sleep(0.6)  # the gateway's key cache looks at the database every half second
    assert chat(attacker, 0) == 200
    after = keys("show", bad, "--db", str(db))
    assert "detector level: none (operator override by alice)" in after.output
    assert "override: none by alice: known researcher" in after.output


def test_a_strip_logprobs_override_refuses_logprobs_as_that_tier_would(guarded, db):
    url, _ = guarded
    key = new_key(db, "pro", None)
    key_id = key.split("-")[1]
    client = sdk(url, key)
    assert attack(client, 1)[0] == 200
    pinned = keys(
        "override", key_id, "--level", "strip_logprobs", "--minutes", "5", "--db", str(db)
    )
    assert pinned.exit_code == 0, pinned.output
    time.sleep(0.6)
    assert attack(client, 2)[0] == 400
    assert chat(client, 0) == 200
    rows = audit_rows(db, 3)
    assert [r["decision"] for r in rows] == ["allowed", "detector_stripped", "allowed"]
    assert "operator override" in rows[1]["reason"]


def test_a_restarted_gateway_keeps_the_blocks_it_recorded(tiny_server, tmp_path, db):
    from retort.guard.audit import AuditWriter, EventRow

    key = new_key(db, "pro", None)
    writer = AuditWriter(db)  # what a gateway that blocked the key left behind
    writer.write(EventRow(time.time() - 60, key.split("-")[1], 0.99, "block", "[]"))
    writer.close()
    (tmp_path / "weights.json").write_text(json.dumps(WEIGHTS))
    (tmp_path / "guard.yaml").write_text(POLICY)
    with gateway(tiny_server, tmp_path / "guard.yaml", db) as (url, _):
        status, message = attack(sdk(url, key), 0)
    assert status == 429 and message.endswith("this key is blocked")
    assert audit_rows(db, 1)[0]["decision"] == "detector_blocked"


def test_override_refuses_unknown_levels(db):
    key_id = new_key(db, "pro", None).split("-")[1]
    wrong = keys("override", key_id, "--level", "blok", "--db", str(db))
    assert "did you mean 'block'" in str(wrong.exception)


def test_embeddings_are_computed_off_the_request_path():
    from retort.guard.detect.embed import load_embedder
    from retort.guard.detect.model import Scorer
    from retort.guard.detect.online import OnlineDetector
    from retort.guard.detect.request import Request
    from retort.guard.policy import Detector

    scorer = Scorer.load(None)
    config = Detector(enabled=True, score_every=4, min_requests=8, embedder="hash")
    detector = OnlineDetector(config, scorer, load_embedder("hash"))
    try:
        for i in range(40):
            detector.observe(Request(ts=float(i), key="k", text=f"Tell me about {TOPICS[i % 4]}"))
        assert detector.flush(30)
        tracked = detector._states["k"]
        assert tracked.state.window_embeddings().shape[0] == 40
        assert any(name.startswith("topics.") for name in tracked.embedded)
    finally:
        detector.close()


def test_a_watermark_step_has_the_upstream_watermark_that_keys_answers_only(
    tiny_model_dir, tmp_path, db
):
    # the real gateway in front of a real `retort serve --watermark KEY --watermark-on-request`
    from retort.serve.app import create_app
    from retort.serve.background import serve_in_thread
    from retort.teachers.local import LocalTeacher
    from retort.watermark.detect import detect_pooled
    from tests.watermark.conftest import make_key

    mark = make_key("gumbel", context_width=2)
    teacher = LocalTeacher.load(str(tiny_model_dir)).watermarked(mark)
    upstream = create_app(teacher, "tiny", max_batch=4, wait_ms=20, on_request=True)
    (tmp_path / "weights.json").write_text(json.dumps(WEIGHTS))
    policy = tmp_path / "guard.yaml"
    policy.write_text(
        POLICY.replace("max_tokens: 4", "max_tokens: 16").replace(
            "action: tighten, factor: 0.01", "action: watermark"
        )
    )
    watched, plain = new_key(db, "pro", None), new_key(db, "pro", None)
    pinned = keys("override", watched.split("-")[1], "--level", "watermark", "--db", str(db))
    assert pinned.exit_code == 0, pinned.output
    with serve_in_thread(upstream) as model_url, gateway(model_url, policy, db) as (url, _):

        def p_value(key: str) -> float:
            body = {"model": "tiny", "prompt": [5, 6, 7, 8], "max_tokens": 16, "temperature": 1.0}
            body.update(logprobs=0, return_tokens_as_token_ids=True)
            ids = []
            for _ in range(4):
                response = httpx.post(
                    f"{url}/completions",
                    json=body,
                    headers={"authorization": f"Bearer {key}"},
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                tokens = response.json()["choices"][0]["logprobs"]["tokens"]
                ids.append([int(t.removeprefix("token_id:")) for t in tokens])
            return detect_pooled(ids, mark, contexts=[[5, 6, 7, 8]] * 4).p_value

        assert p_value(watched) < 1e-6
        assert p_value(plain) > 1e-4
    rows = audit_rows(db, 8)
    decisions = {r["key"]: r["decision"] for r in rows}
    assert decisions[watched.split("-")[1]] == "detector_watermarked"
    assert decisions[plain.split("-")[1]] == "allowed"
    marked = next(r for r in rows if r["decision"] == "detector_watermarked")
    assert "detector watermark: operator override" in marked["reason"]
