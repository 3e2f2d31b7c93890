"""recipes/long's prompt files: valid, the quickstart's held-out split, no held-out fact in
training, and rebuilt byte for byte by scripts/build_long_prompts.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from retort.capture.prompts import load_prompts
from retort.quickstart.pipeline import BUDGETS, split_prompts

ROOT = Path(__file__).parents[1]
LONG = ROOT / "recipes" / "long"
QUIZ = Path("/usr/share/games/bsdgames/quiz")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_prompt_files_validate_and_the_training_set_is_larger():
    train = load_prompts(LONG / "prompts-train.jsonl")
    heldout = load_prompts(LONG / "prompts-heldout.jsonl")
    assert len(train) > 4 * len(heldout) and len(train) >= 1500
    assert len({r.id for r in train} | {r.id for r in heldout}) == len(train) + len(heldout)


def test_heldout_is_the_quickstarts_and_its_facts_stay_out_of_training(tmp_path):
    quickstart_train, quickstart_heldout = split_prompts(BUDGETS["default"], tmp_path)
    assert (LONG / "prompts-heldout.jsonl").read_text() == quickstart_heldout.read_text()
    train = records(LONG / "prompts-train.jsonl")
    assert {r["id"] for r in records(quickstart_train)} <= {r["id"] for r in train}
    heldout = records(quickstart_heldout)
    held_prompts = {r["prompt"].lower() for r in heldout}
    held_text = " ".join(r["prompt"] + " " + r.get("reference", "") for r in heldout).lower()
    for record in train:
        assert record["prompt"].lower() not in held_prompts, record
        if record["id"].startswith("quiz-") and len(record["reference"]) > 2:
            word = re.escape(record["reference"].lower())
            assert not re.search(rf"\b{word}\b", held_text), record


@pytest.mark.skipif(not QUIZ.is_dir(), reason="bsdgames' quiz files are not installed")
def test_builder_rebuilds_the_shipped_files_exactly():
    before = {p.name: p.read_bytes() for p in LONG.glob("prompts-*.jsonl")}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_long_prompts.py")], check=True)
    assert {p.name: p.read_bytes() for p in LONG.glob("prompts-*.jsonl")} == before


def test_builder_without_quiz_files_says_so_and_keeps_the_shipped_files(tmp_path):
    before = {p.name: p.read_bytes() for p in LONG.glob("prompts-*.jsonl")}
    script = ROOT / "scripts" / "build_long_prompts.py"
    missing = tmp_path / "no-quiz"
    result = subprocess.run(
        [sys.executable, str(script), "--quiz", str(missing)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        == f"{missing}: no quiz folder; apt-get install bsdgames (or --quiz DIR)"
    )
    assert {p.name: p.read_bytes() for p in LONG.glob("prompts-*.jsonl")} == before
