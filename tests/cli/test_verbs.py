"""The verbs on a tiny teacher, end to end through the CLI: generate → distill → eval → inspect."""

from __future__ import annotations

import json
import sys

import pytest

from retort.cli.main import main
from tests.cli.test_errors import run_cli


def test_generate_distill_eval_inspect(monkeypatch, capsys, tiny_model_dir, prompts_file, tmp_path):
    store, run = tmp_path / "store", tmp_path / "run"
    code, _ = run_cli(
        monkeypatch,
        capsys,
        "generate",
        "--teacher",
        tiny_model_dir,
        "--prompts",
        prompts_file,
        "--out",
        store,
        "--max-new-tokens",
        "6",
        "--top-k",
        "4",
    )
    assert code == 0
    code, _ = run_cli(
        monkeypatch,
        capsys,
        "distill",
        "--data",
        store,
        "--out",
        run,
        "--teacher",
        tiny_model_dir,
        "--student",
        "prune:2",
        "--max-steps",
        "2",
        "--set",
        "batch_size=4",
    )
    assert code == 0 and (run / "final" / "config.json").is_file()
    code, _ = run_cli(
        monkeypatch,
        capsys,
        "eval",
        "--teacher",
        tiny_model_dir,
        "--data",
        store,
        "--student",
        run,
        "--student",
        "prune:1",
        "--out",
        tmp_path / "eval",
        "--answer-tokens",
        "4",
        "--speed-tokens",
        "4",
    )
    assert code == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    names = [m["name"] for m in report["models"]]
    assert names == ["teacher", str(run), "prune:1"]
    teacher = report["models"][0]
    assert teacher["kl"] < 1e-5 and teacher["top1_agreement"] == 1.0
    assert report["models"][1]["parameters"] < teacher["parameters"]
    monkeypatch.setattr(sys, "argv", ["retort", "inspect", str(store), "--json"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    summary = json.loads(capsys.readouterr().out)
    assert exit_info.value.code == 0
    assert summary["rows"] == 12 and summary["fingerprint"]["top_k"] == 4
