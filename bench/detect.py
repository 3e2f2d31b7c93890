"""The extraction detector measured on simulated traffic, tuned on one seed and corpus split
and reported on another (the splits share no source text).

    python bench/detect.py                 # measure the packaged weights and every family alone
    python bench/detect.py --fit           # refit src/retort/guard/detect/weights/ first

Steps: simulate a tuning log (seed 1, split a), a report log (seed 2, split b) and a benign
baseline (seed 3, split a, benign keys only: the window test's known-benign history); scan each
once with ``keep_values`` (the features at every checkpoint of every key and cluster do not
depend on the model); fit a logistic model per feature family and for all families together
on the tuning log's checkpoints; choose each model's operating point on the tuning log's
benign keys (≤ 0.5 % flagged, a margin under the 1 % goal); then score the report log. For
every model: ROC AUC over keys, TPR at 1 % FPR (the threshold taken on the report log's own
benign keys, the usual ROC reading), and at the operating point fixed on the tuning log (the
honest one): the share of benign keys flagged, the share of attacker keys flagged per style,
and the median number of requests a flagged attacker key sent before its first flag. PRADA
and the MMD window test are the baselines, each a family of one feature.

Writes bench/results/detect.json and prints the tables docs/guard.md quotes.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retort.guard.detect.embed import load_embedder
from retort.guard.detect.fit import fit_weights, operating_point, save_weights, scorer_from
from retort.guard.detect.metrics import roc_auc, tpr_at_fpr
from retort.guard.detect.model import Scorer
from retort.guard.detect.scan import ScanResult, scan
from retort.guard.detect.simulate import write
from retort.guard.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src/retort/guard/detect/weights"
RESULTS = ROOT / "bench/results/detect.json"
RECIPE = ROOT / "recipes/guard/guard.yaml"
FAMILIES = {
    "volume": "volume and token ratio",
    "timing": "timing regularity",
    "turns": "single-turn / follow-ups",
    "sweeps": "logprob / n / seed sweeps",
    "templates": "template regularity",
    "elicit": "CoT elicitation",
    "topics": "topical coverage",
    "prada": "PRADA (baseline)",
    "window": "MMD window test (baseline)",
}
TARGET_FPR = 0.01
# The operating point is fixed at half the target on the tuning log: at 1 % it rests on the 3
# highest of ~330 benign keys, and did not carry over to the report log (6 % flagged there).
TUNE_FPR = TARGET_FPR / 2
EMBEDDING_FAMILIES = ("topics", "prada", "window")


@dataclass
class Log:
    """A scanned simulated log: its scan (with checkpoint values) and its labels."""

    result: ScanResult
    labels: dict[str, dict]

    def attack(self, key: str) -> bool:
        return self.labels[key]["label"] == "attack"


def simulated(folder: Path, name: str, seed: int, split: str, scale: float) -> tuple[Path, dict]:
    path = folder / f"{name}.jsonl"
    write(path, seed=seed, split=split, scale=scale)
    labels = json.loads(path.with_name(f"{name}.labels.json").read_text())
    return path, labels["keys"]


def benign_only(path: Path, labels: dict[str, dict]) -> Path:
    """The benign keys' records of a log: a known-benign history for the window test."""
    out = path.with_name(path.stem + ".benign.jsonl")
    with path.open() as src, out.open("w") as dst:
        for line in src:
            if labels[json.loads(line)["key"]]["label"] == "benign":
                dst.write(line)
    return out


def stream_scores(checkpoints, history, scorer: Scorer) -> tuple[float, list[float]]:
    """A stream's peak score under ``scorer`` and its score at each checkpoint."""
    scores = [scorer.score(v, top=0).score for v in checkpoints]
    return (max(scores) if scores else 0.0), scores


def key_scores(log: Log, scorer: Scorer) -> dict[str, tuple[float, int | None]]:
    """Each key's final score (its own peak or its cluster's, the higher) and the requests it
    had sent when first flagged at ``scorer.flag_at`` — as ``scan`` itself decides them."""
    clusters = {}
    for c in log.result.clusters:
        peak, scores = stream_scores(c.trace.checkpoints, c.trace.history, scorer)
        first_ts = next(
            (h[1] for h, s in zip(c.trace.history, scores, strict=True) if s >= scorer.flag_at),
            None,
        )
        clusters[c.id] = (peak, first_ts)
    times: dict[str, list[float]] = defaultdict(list)
    for r in log.result.log.requests:  # oldest first
        times[r.key].append(r.ts)
    out = {}
    for k in log.result.keys:
        peak, scores = stream_scores(k.own.checkpoints, k.own.history, scorer)
        first = next(
            (h[0] for h, s in zip(k.own.history, scores, strict=True) if s >= scorer.flag_at),
            None,
        )
        if k.cluster in clusters:
            c_peak, c_ts = clusters[k.cluster]
            if c_ts is not None:  # the key's own requests up to its cluster's first flag
                mine = max(1, bisect.bisect_right(times[k.key], c_ts))
                first = mine if first is None else min(first, mine)
            peak = max(peak, c_peak)
        out[k.key] = (peak, first)
    return out


def rows(log: Log) -> tuple[list[dict[str, float]], list[bool]]:
    """Every checkpoint of every key and cluster, labelled by its key (a cluster: by the
    majority of its members)."""
    x, y = [], []
    for k in log.result.keys:
        x += list(k.own.checkpoints)
        y += [log.attack(k.key)] * len(k.own.checkpoints)
    for c in log.result.clusters:
        attack = sum(log.attack(m) for m in c.keys) * 2 > len(c.keys)
        x += list(c.trace.checkpoints)
        y += [attack] * len(c.trace.checkpoints)
    return x, y


def fitted(tune: Log, features: list[str]) -> Scorer:
    """A model over ``features`` fitted on the tuning log, its operating point holding ≤ 0.5 %
    of the tuning log's benign keys flagged (``TUNE_FPR``)."""
    x, y = rows(tune)
    weights, bias = fit_weights(x, y, features)
    scorer = scorer_from(weights, bias, 1.0)
    benign = [s for k, (s, _) in key_scores(tune, scorer).items() if not tune.attack(k)]
    return scorer_from(weights, bias, operating_point(benign, TUNE_FPR))


def evaluate(log: Log, scorer: Scorer) -> dict:
    scores = key_scores(log, scorer)
    keys = sorted(scores)
    s = np.array([scores[k][0] for k in keys])
    y = np.array([log.attack(k) for k in keys])
    per_style: dict[str, list[tuple[bool, int | None]]] = defaultdict(list)
    for k in keys:
        if log.attack(k):
            per_style[log.labels[k]["style"]].append((scores[k][0] >= scorer.flag_at, scores[k][1]))
    styles = {}
    for style, got in sorted(per_style.items()):
        firsts = [f for hit, f in got if hit and f is not None]
        styles[style] = {
            "keys": len(got),
            "tpr": sum(hit for hit, _ in got) / len(got),
            "median_requests_to_flag": statistics.median(firsts) if firsts else None,
        }
    benign_styles: dict[str, list[bool]] = defaultdict(list)
    for k in keys:
        if not log.attack(k):
            benign_styles[log.labels[k]["style"]].append(scores[k][0] >= scorer.flag_at)
    return {
        "auc": roc_auc(s, y),
        "tpr_at_1pct_fpr": tpr_at_fpr(s, y, TARGET_FPR),
        "fpr_at_operating_point": float((s[~y] >= scorer.flag_at).mean()),
        "tpr_at_operating_point": float((s[y] >= scorer.flag_at).mean()),
        "flag_at": scorer.flag_at,
        "attack_styles": styles,
        "benign_flagged": {st: sum(v) / len(v) for st, v in sorted(benign_styles.items())},
        "ladder": ladder_reached(s, y),
    }


def ladder_reached(scores: np.ndarray, attack: np.ndarray) -> dict[str, dict[str, float]]:
    """The share of benign and of attacker keys whose peak score reaches each step of the
    example policy's ladder (meaningful for the packaged weights, whose flag point is 0.5)."""
    steps = load_policy(RECIPE).detector.ladder
    return {
        f"{step.action} (at {step.at:g})": {
            "benign": float((scores[~attack] >= step.at).mean()),
            "attack": float((scores[attack] >= step.at).mean()),
        }
        for step in steps
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="refit the packaged weights/")
    parser.add_argument("--scale", type=float, default=1.0, help="simulator scale (1 ≈ 400 keys)")
    parser.add_argument(
        "--embedders", default="minilm,hash", help="comma-separated; the first: the family table"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.time()
    table, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tune_path, tune_labels = simulated(folder, "tune", 1, "a", args.scale)
        report_path, report_labels = simulated(folder, "report", 2, "b", args.scale)
        base_path, base_labels = simulated(folder, "baseline", 3, "a", args.scale)
        baseline = benign_only(base_path, base_labels)
        for position, spec in enumerate(args.embedders.split(",")):
            embedder = load_embedder(spec)  # cached: the baseline's prompts are embedded once
            logs = {}
            for name, path, labels in (
                ("tune", tune_path, tune_labels),
                ("report", report_path, report_labels),
            ):
                t0 = time.time()
                result = scan([path], [baseline], embedder=embedder, keep_values=True)
                logs[name] = Log(result, labels)
                print(f"{embedder.name}: scanned {name} ({len(result.keys)} keys) in "
                      f"{time.time() - t0:.0f}s", flush=True)  # fmt: skip
            tune, report = logs["tune"], logs["report"]
            sizes = {
                "tune": {"keys": len(tune.result.keys), "requests": tune.result.log.read},
                "report": {"keys": len(report.result.keys), "requests": report.result.log.read},
            }
            names = sorted({f for k in tune.result.keys for v in k.own.checkpoints for f in v})
            models: dict[str, tuple[str, Scorer]] = {}
            if position == 0:
                for family, words in FAMILIES.items():
                    features = [f for f in names if f.split(".")[0] == family]
                    if features:
                        models[f"{words} alone"] = ("", fitted(tune, features))
            models[f"all families, {embedder.name}"] = (embedder.name, fitted(tune, names))
            cheap = [f for f in names if f.split(".")[0] not in EMBEDDING_FAMILIES]
            if position == len(args.embedders.split(",")) - 1:
                models["all families but the embedding ones (no embedder)"] = (
                    "none",
                    fitted(tune, cheap),
                )
            for label, (weights_name, scorer) in models.items():
                table[label] = evaluate(report, scorer)
                if args.fit and weights_name:
                    save(weights_name, scorer, args.scale)
                    table[f"packaged weights/{weights_name}.json"] = evaluate(
                        report, Scorer.load(embedder=weights_name)
                    )
            if not args.fit:
                table[f"packaged weights/{embedder.name}.json"] = evaluate(
                    report, Scorer.load(embedder=embedder.name)
                )
    payload = {
        "command": " ".join(["python", "bench/detect.py", *sys.argv[1:]]),
        **sizes,
        "seconds": round(time.time() - started),
        "models": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print_tables(payload)


def save(weights_name: str, scorer: Scorer, scale: float) -> None:
    """Write the packaged weights with the bias shifted so the operating point reads 0.5: the
    same order of keys, and one ladder in the policy file fits every embedder's weights."""
    at = min(max(scorer.flag_at, 1e-9), 1 - 1e-9)
    save_weights(
        WEIGHTS / f"{weights_name}.json",
        scorer.weights,
        scorer.bias - math.log(at / (1 - at)),
        0.5,
        {
            "fitted_on": f"retort guard simulate --seed 1 --split a --scale {scale:g}",
            "embedder": weights_name,
            "note": "refit with: python bench/detect.py --fit",
        },
    )


def print_tables(payload: dict) -> None:
    print(f"\n{payload['command']}  ({payload['seconds']} s)")
    print(f"tune: {payload['tune']}  report: {payload['report']}\n")
    print("| features | AUC | TPR @ 1 % FPR | at the operating point: benign flagged | attackers |")
    print("|---|---|---|---|---|")
    for name, m in payload["models"].items():
        print(
            f"| {name} | {m['auc']:.3f} | {m['tpr_at_1pct_fpr']:.1%} | "
            f"{m['fpr_at_operating_point']:.1%} | {m['tpr_at_operating_point']:.1%} |"
        )
    best = next(m for n, m in payload["models"].items() if n.startswith("packaged"))
    print("\n| attack style | keys | flagged | median requests to first flag |")
    print("|---|---|---|---|")
    for style, s in best["attack_styles"].items():
        median = s["median_requests_to_flag"]
        print(f"| {style} | {s['keys']} | {s['tpr']:.0%} | {median if median else '-'} |")
    print("\n| benign style | flagged |\n|---|---|")
    for style, share in best["benign_flagged"].items():
        print(f"| {style} | {share:.1%} |")
    print("\n| ladder step (recipes/guard/guard.yaml) | benign keys reaching it | attackers |")
    print("|---|---|---|")
    for step, got in best["ladder"].items():
        print(f"| {step} | {got['benign']:.1%} | {got['attack']:.1%} |")


if __name__ == "__main__":
    main()
