"""``judge.json``: what a judge run found, in the shape other tools (the HTML report) read.

```
{"judge": str, "a": str, "b": str, "prompts": int,
 "pairwise": {"a_wins", "b_wins", "ties", "unparsable", "win_rate_a", "ci_low", "ci_high",
              "interval": "wilson-95", "position_consistency"},
 "graded": {"a": {"correct", "graded", "unparsable", "accuracy", "ci_low", "ci_high"},
            "b": {...}} | null (no prompt has a reference),
 "examples": [{"id", "prompt", "answer_a", "answer_b", "verdict", "judgments"}] (≤ 20),
 "judge_prompt_sha256": str}
```

``win_rate_a``, ``position_consistency`` and ``accuracy`` are null when nothing could be read.
An example's ``judgments`` are the judge's last raw reply in order ab, then in order ba.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retort.capture.prompts import PromptRecord
from retort.judge.journal import Journal
from retort.judge.stats import accuracy, combine, pairwise_counts

EXAMPLES = 20


def summarize(
    records: list[PromptRecord],
    answer: dict[tuple[str, str], str],
    judgments: Journal,
    *,
    judge: str,
    a: str,
    b: str,
    judge_prompt_sha256: str,
) -> dict[str, Any]:
    """The summary of every prompt in ``records`` (all judged by now)."""

    def record(prompt_id: str, kind: str) -> dict[str, Any]:
        found = judgments.get((prompt_id, kind))
        if found is None:
            raise KeyError(f"prompt {prompt_id}: no {kind} judgment")
        return found

    ids = [r.id or "" for r in records]
    orders = [(record(i, "ab")["winner"], record(i, "ba")["winner"]) for i in ids]
    referenced = [r.id or "" for r in records if r.reference]
    graded = None
    if referenced:
        graded = {
            side: accuracy(record(i, f"grade_{side}")["verdict"] for i in referenced)
            for side in ("a", "b")
        }
    examples = [
        {
            "id": i,
            "prompt": r.canonical(),
            "answer_a": answer[i, "a"],
            "answer_b": answer[i, "b"],
            "verdict": combine(*pair),
            "judgments": [record(i, kind)["attempts"][-1]["reply"] for kind in ("ab", "ba")],
        }
        for i, r, pair in list(zip(ids, records, orders, strict=True))[:EXAMPLES]
    ]
    return {
        "judge": judge,
        "a": a,
        "b": b,
        "prompts": len(records),
        "pairwise": pairwise_counts(orders),
        "graded": graded,
        "examples": examples,
        "judge_prompt_sha256": judge_prompt_sha256,
    }


def write_summary(out: Path, report: dict[str, Any]) -> Path:
    """Write ``out/judge.json`` whole: a .partial file renamed into place."""
    path = Path(out) / "judge.json"
    partial = path.with_name(".judge.json.partial")
    partial.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    partial.replace(path)
    return path
