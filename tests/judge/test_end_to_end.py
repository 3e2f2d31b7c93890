"""`retort judge` end to end with real models: a random tiny judge behind a real `retort serve`
on 127.0.0.1, a local tiny model as A and its pruned copy as B. A random judge writes garbage,
so this checks the machinery (records, exactly once, unparsable counted, summary shape), not
the verdicts."""

from __future__ import annotations

import json

import pytest

from retort.judge.templates import load_template
from tests.conftest import PROMPTS, write_jsonl
from tests.judge.conftest import read_jsonl

SUMMARY_KEYS = {"judge", "a", "b", "prompts", "pairwise", "graded", "examples"}
SUMMARY_KEYS |= {"judge_prompt_sha256"}
PAIRWISE_KEYS = {"a_wins", "b_wins", "ties", "unparsable", "win_rate_a", "ci_low", "ci_high"}
PAIRWISE_KEYS |= {"interval", "position_consistency"}


@pytest.fixture(scope="module")
def judge_server(tiny_judge_dir):
    from retort.serve.app import create_app
    from retort.serve.background import serve_in_thread
    from retort.teachers.local import LocalTeacher

    teacher = LocalTeacher.load(str(tiny_judge_dir))
    with serve_in_thread(create_app(teacher, "tiny-judge", max_batch=8, wait_ms=20)) as url:
        yield url


def test_served_judge_local_models_end_to_end(cli, judge_server, tiny_model_dir, tmp_path):
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:6]]
    references = sum(1 for r in records if r.get("reference"))
    assert 0 < references < len(records)
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    out = tmp_path / "out"
    code, err = cli(
        *("judge", "--judge", judge_server, "--judge-model", "tiny-judge"),
        *("--a", tiny_model_dir, "--b", "prune:2", "--teacher", tiny_model_dir),
        *("--prompts", prompts, "--out", out, "--retries", "1"),
        *("--max-answer-tokens", "12", "--max-judge-tokens", "16"),
    )
    assert code == 0, err

    judgments = read_jsonl(out / "judgments.jsonl")
    keys = [(r["id"], r["kind"]) for r in judgments]
    assert len(keys) == len(set(keys)) == 2 * len(records) + 2 * references
    for record in judgments:
        attempts = record["attempts"]
        assert 1 <= len(attempts) <= 2 and all(isinstance(a["reply"], str) for a in attempts)
        # A record is unparsable exactly when its last attempt was; earlier ones were re-asked.
        assert (record["verdict"] is None) == (attempts[-1]["reason"] is not None)
        assert all(a["reason"] is not None for a in attempts[:-1])

    report = json.loads((out / "judge.json").read_text())
    assert set(report) == SUMMARY_KEYS and set(report["pairwise"]) == PAIRWISE_KEYS
    assert report["judge"] == f"{judge_server}#tiny-judge" and report["b"] == "prune:2"
    assert report["judge_prompt_sha256"] == load_template("pairwise").sha256
    pairwise = report["pairwise"]
    by_key = {(r["id"], r["kind"]): r for r in judgments}
    unreadable = sum(
        by_key[r["id"], "ab"]["verdict"] is None or by_key[r["id"], "ba"]["verdict"] is None
        for r in records
    )
    assert pairwise["unparsable"] == unreadable
    counted = pairwise["a_wins"] + pairwise["b_wins"] + pairwise["ties"] + pairwise["unparsable"]
    assert counted == report["prompts"] == len(records)
    assert 0.0 <= pairwise["ci_low"] <= pairwise["ci_high"] <= 1.0
    for side in ("a", "b"):
        graded = report["graded"][side]
        assert graded["graded"] + graded["unparsable"] == references
    assert len(report["examples"]) == len(records)
    example = report["examples"][0]
    assert example["id"] == records[0]["id"] and len(example["judgments"]) == 2
    assert example["verdict"] in {"a", "b", "tie", "unparsable"}
    assert example["judgments"][0] == by_key[example["id"], "ab"]["attempts"][-1]["reply"]
    assert not list(out.glob("*.partial"))  # judge.json was renamed into place
