"""A tiny distill run with held-out scores, its eval.json and a judge.json, shared by the
report tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir, tiny_store) -> dict[str, Path]:
    from retort.config import DistillConfig
    from retort.evaluate.run import evaluate
    from retort.models.students import load_student
    from retort.teachers.local import LocalTeacher
    from retort.train.loop import distill

    folder = tmp_path_factory.mktemp("report")
    config = DistillConfig(
        data=tiny_store,
        out=folder / "run",
        student="prune:2",
        teacher=str(tiny_model_dir),
        objective="topk",
        ce_weight=0.5,
        max_steps=8,
        batch_size=4,
        learning_rate=3e-3,
        warmup_steps=1,
        eval_data=tiny_store,
        eval_every=4,
    )
    result = distill(config)
    teacher = LocalTeacher.load(str(tiny_model_dir))
    students = {
        "student before": load_student("prune:2", teacher)[0],
        "student after": load_student(str(result.final_dir), teacher)[0],
    }
    evaluate(teacher, students, tiny_store, folder / "eval", speed_tokens=2, answer_tokens=4)
    judge = folder / "judge.json"
    summary = {
        "judge": "tiny",
        "a": "student after",
        "b": "student before",
        "prompts": 2,
        "pairwise": {
            "a_wins": 1,
            "b_wins": 0,
            "ties": 1,
            "unparsable": 0,
            "win_rate_a": 0.75,
            "ci_low": 0.3,
            "ci_high": 0.95,
            "interval": "wilson-95",
            "position_consistency": 0.5,
        },
        "graded": None,
        "examples": [
            {
                "id": "p1",
                "prompt": "Say <hi> & go",
                "answer_a": "hi",
                "answer_b": "ho",
                "verdict": "a",
                "judgments": ["[[A]]", "[[B]]"],
            }
        ],
        "judge_prompt_sha256": "0" * 64,
    }
    judge.write_text(json.dumps(summary))
    return {"run": result.run_dir, "eval": folder / "eval" / "eval.json", "judge": judge}
