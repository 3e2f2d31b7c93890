"""What a report reads: run folders (config.yaml, metrics.jsonl, the store's fingerprint),
eval.json files and judge.json files, each checked before anything is drawn."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retort.errors import ConfigError

QUICKSTART_STUDENT = "student"  # a quickstart folder keeps its distill run here
QUICKSTART_EVAL = Path("eval") / "eval.json"


@dataclass
class Run:
    """One `retort distill` run folder."""

    name: str
    path: Path
    config: dict[str, Any]
    train: list[dict[str, Any]]  # metrics.jsonl lines of training steps
    heldout: list[dict[str, Any]]  # metrics.jsonl lines with "split": "eval"
    fingerprint: dict[str, Any] = field(default_factory=dict)  # the training store's


@dataclass
class Sources:
    runs: list[Run]
    evals: list[tuple[Path, dict[str, Any]]]
    judges: list[tuple[Path, dict[str, Any]]]


def gather(runs: list[Path], evals: list[Path], judges: list[Path]) -> Sources:
    """Load everything given; a quickstart folder counts as its student run plus its eval."""
    loaded, eval_paths = [], list(evals)
    for path in runs:
        path = Path(path)
        if (path / "quickstart.json").is_file():
            if (path / QUICKSTART_EVAL).is_file() and path / QUICKSTART_EVAL not in eval_paths:
                eval_paths.append(path / QUICKSTART_EVAL)
            loaded.append(load_run(path / QUICKSTART_STUDENT, name=path.name))
        else:
            loaded.append(load_run(path))
    sources = Sources(
        loaded,
        [(p, load_eval(p)) for p in eval_paths],
        [(p, load_judge(p)) for p in judges],
    )
    check_same_teacher(sources)
    return sources


def load_run(path: Path, name: str | None = None) -> Run:
    if not path.is_dir():
        raise ConfigError(f"{path}: not a folder; give a run folder (retort distill --out)")
    metrics = path / "metrics.jsonl"
    if not metrics.is_file() or not metrics.read_text().strip():
        raise ConfigError(
            f"{path}: no metrics.jsonl with steps in it; give the folder a finished or "
            "running `retort distill --out` wrote"
        )
    train, heldout = [], []
    for number, line in enumerate(metrics.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{metrics}:{number}: not JSON ({error.msg})") from None
        (heldout if record.get("split") == "eval" else train).append(record)
    config_path = path / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    return Run(name or path.name, path, config or {}, train, heldout, _fingerprint(config))


def load_eval(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "eval.json"
    report = _json_file(path, "an eval.json from retort eval --out")
    if not isinstance(report.get("models"), list) or not report["models"]:
        raise ConfigError(f"{path}: no 'models' list; give an eval.json written by retort eval")
    return report


def load_judge(path: Path) -> dict[str, Any]:
    summary = _json_file(Path(path), "a judge.json from retort judge --out")
    if "pairwise" not in summary:
        raise ConfigError(f"{path}: no 'pairwise' summary; give a judge.json of retort judge")
    return summary


def check_same_teacher(sources: Sources) -> None:
    """Every eval must score against the teacher the runs learned from: another teacher's
    numbers beside them would read as this student's gap. Weights decide where both sides
    record them, names otherwise (as for stores)."""
    for path, report in sources.evals:
        theirs = report.get("teacher") or _teacher_of(_fingerprint_of(report.get("data")))
        for run in sources.runs:
            ours = _teacher_of(run.fingerprint)
            if theirs and ours and not _same_teacher(theirs, ours):
                raise ConfigError(
                    f"{path}: scored against teacher {theirs['name']}, but {run.path} was "
                    f"distilled from {ours['name']}; give an eval of the runs' own teacher"
                )


def _teacher_of(fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    if not fingerprint.get("teacher"):
        return None
    return {"name": fingerprint["teacher"], "weights": fingerprint.get("teacher_weights")}


def _same_teacher(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("weights") and b.get("weights"):
        return a["weights"] == b["weights"]
    return a["name"] == b["name"]


def _fingerprint(config: dict[str, Any] | None) -> dict[str, Any]:
    data = (config or {}).get("data")
    return _fingerprint_of(data) if data else {}


def _fingerprint_of(store: str | None) -> dict[str, Any]:
    """The store's fingerprint, or {} when the store is gone (a report of an old run)."""
    manifest = Path(store) / "manifest.json" if store else None
    if manifest is None or not manifest.is_file():
        return {}
    return json.loads(manifest.read_text()).get("fingerprint", {})


def _json_file(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; give {what}")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}:{error.lineno}: not JSON ({error.msg}); give {what}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: not a JSON object; give {what}")
    return value
