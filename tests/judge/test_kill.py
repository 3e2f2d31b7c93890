"""`kill -9` a real `retort judge` process at random moments, then run it again: every answer
and every judgment (prompt id, kind) ends up on disk exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import retort
from tests.conftest import PROMPTS, write_jsonl
from tests.judge.conftest import read_jsonl


def test_kill_9_then_rerun_records_each_judgment_exactly_once(
    tiny_judge_dir, tiny_model_dir, tmp_path
):
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:12]]
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    out = tmp_path / "out"
    command = [
        *(sys.executable, "-m", "retort", "judge", "--judge", tiny_judge_dir),
        *("--a", tiny_model_dir, "--b", "prune:1", "--prompts", prompts, "--out", out),
        *("--batch-size", "1", "--max-answer-tokens", "8", "--max-judge-tokens", "24"),
    ]
    # This checkout's retort, also where another one is installed in the environment.
    env = {**os.environ, "PYTHONPATH": str(Path(retort.__file__).parents[1])}
    judgments = out / "judgments.jsonl"

    def lines() -> int:
        return len(judgments.read_bytes().splitlines()) if judgments.exists() else 0

    chance = random.Random(0)
    seen = []
    for _ in range(3):
        before = lines()
        process = subprocess.Popen(
            [str(c) for c in command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while lines() <= before:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no judgment written"
            time.sleep(0.01)
        time.sleep(chance.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        seen.append(lines())
    expected = [
        (r["id"], kind)
        for r in records
        for kind in ("ab", "ba", *(("grade_a", "grade_b") if r.get("reference") else ()))
    ]
    assert seen == sorted(set(seen)) and seen[-1] < len(expected), seen  # killed mid-way

    finished = subprocess.run([str(c) for c in command], env=env, capture_output=True)
    assert finished.returncode == 0, finished.stderr.decode()
    keys = [(r["id"], r["kind"]) for r in read_jsonl(judgments)]
    assert sorted(keys) == sorted(expected)  # no judgment lost, none twice
    answers = [(r["id"], r["side"]) for r in read_jsonl(out / "answers.jsonl")]
    assert sorted(answers) == sorted((r["id"], s) for r in records for s in "ab")
    report = json.loads((out / "judge.json").read_text())
    pairwise = report["pairwise"]
    counted = pairwise["a_wins"] + pairwise["b_wins"] + pairwise["ties"] + pairwise["unparsable"]
    assert counted == report["prompts"] == len(records)
