"""Benchmark: the provenance audit on students retort distilled itself (not a test).

The embedded teacher answers the same training prompts twice: once watermarked with a KGW key,
once without (the control). Four students are distilled from them with the same recipe
(``prune:10``, ``sft``, one token budget): on the watermarked text (100 %), on mixes in which
50 % and 10 % of the prompts take the watermarked answer, and on the unwatermarked text (0 %).
Each student, the untrained prune and the teacher are then audited two ways, each with the
real key and ``--null-keys`` random wrong keys (their p-values should look uniform: KS test),
and the audit tokens needed for p < 1e-6 are read off growing prefixes of the scored pairs:

- reading mode (open weights): teacher-forced on the unwatermarked teacher's answers to
  held-out prompts, its top-1 predictions scored;
- sampling mode (what an API allows): the suspect answers the held-out prompts at temperature
  1 and the detector scores the pooled distinct pairs of its answers. The teacher's row is its
  own unwatermarked answers (the audit corpus).

Why ``sft``: a KGW capture stores the teacher's raw (unwatermarked) top-k, so a top-k student
would learn the watermark only through which tokens were sampled; sequence-level KD on the
watermarked text is the extraction an API user can do.

Everything lands under ``--work`` (stores, students, the key) and a killed run resumes where
it stopped: captures skip finished prompts, students resume from their last checkpoint.

    .venv/bin/python bench/audit.py [--train-prompts 1000] [--student-tokens 150000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retort.audit.pairs import Candidates, PairCollector, frequent_kgrams
from retort.audit.reading import top1_predictions
from retort.audit.result import verdict
from retort.audit.scoring import score_key
from retort.capture.runner import generate
from retort.capture.store import Store
from retort.config import DistillConfig, GenerateConfig
from retort.guard.detect import corpora
from retort.models.embedded import ALIAS
from retort.models.pruning import prune_layers
from retort.teachers.local import LocalTeacher
from retort.train.loop import distill
from retort.watermark.keys import Key, load_key, new_key, save_key

RESULTS = Path(__file__).parent / "results" / "audit.json"
STUDENT_LAYERS = 10
TARGET = 1e-6
MIXES = {"wm-100": 1.0, "wm-50": 0.5, "wm-10": 0.1, "control": 0.0}  # share watermarked
AUDIT_SHARE = 0.15  # prompts held out for the audit corpus


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    teacher = LocalTeacher.load(ALIAS)
    key = _key(work / "keys" / "teacher.key", teacher.tokenizer)

    train, held_out = _prompts(work, args.train_prompts, args.audit_prompts)
    stores = {
        "wm": _capture(args, teacher, train, work / "stores" / "train-wm", watermarked=True),
        "plain": _capture(args, teacher, train, work / "stores" / "train-plain"),
        "audit": _capture(args, teacher, held_out, work / "stores" / "audit-plain"),
    }
    students: dict[str, Any] = {}
    for name in args.mixes:
        share = MIXES[name]
        data = _mixed_store(work / "stores" / f"mix-{name}", stores["wm"], stores["plain"], share)
        students[name] = _train(args, teacher, data, work / "students" / name)

    corpus = [r["prompt_token_ids"] + r["completion_token_ids"] for r in stores["audit"].rows()]
    suspects = {"teacher": teacher.model, "prune (untrained)": None, **students}
    audits: dict[str, Any] = {}
    sampled: dict[str, Any] = {}
    for name, model in suspects.items():
        if model is None:
            model = prune_layers(teacher.model, STUDENT_LAYERS)
        audits[name] = _audit(args, model, corpus, key)
        _report("reading", name, audits[name])
        answers = (
            stores["audit"]
            if name == "teacher"
            else _capture(
                args,
                LocalTeacher(model, teacher.tokenizer),
                held_out,
                work / "samples" / _slug(name),
                spec=f"bench-audit/{_slug(name)}",
            )
        )
        sampled[name] = _sampled(args, answers, key)
        _report("sampling", name, sampled[name])

    results = {
        "bench": "audit",
        "machine": {"platform": platform.platform(), "threads": args.threads, "gpu": False},
        "teacher": ALIAS,
        "key": key.public(),
        "settings": {k: str(v) for k, v in vars(args).items() if k not in ("work", "out")},
        "data": {
            "train_prompts": _count(train),
            "audit_prompts": _count(held_out),
            "train_tokens": {n: _tokens(s) for n, s in stores.items() if n in ("wm", "plain")},
            "audit_tokens": _tokens(stores["audit"]),
            "green_share": {n: _green_share(stores[n], key) for n in ("wm", "plain")},
        },
        "students": {n: _train_summary(work / "students" / n) for n in args.mixes},
        "audits": audits,
        "sampled": sampled,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nwrote {args.out} in {results['seconds']:.0f} s")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("bench/work/audit"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--train-prompts", type=int, default=1000)
    parser.add_argument("--audit-prompts", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--student-tokens", type=int, default=150_000, help="target tokens each")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--null-keys", type=int, default=50, help="random wrong keys per audit")
    parser.add_argument("--frequent", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32, help="generation batch")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--mixes",
        type=_mixes,
        default=list(MIXES),
        help=f"students to distill, comma-separated (default all: {','.join(MIXES)}); "
        "a later run with more resumes the ones already trained",
    )
    return parser.parse_args()


def _mixes(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in MIXES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown mix {unknown}; choose from {','.join(MIXES)}")
    return names


def _key(path: Path, tokenizer: Any) -> Key:
    """The teacher's KGW lefthash key (gamma 0.25, delta 2), kept so a resumed run reuses it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = new_key(scheme="kgw", seeding="lefthash", tokenizer=tokenizer, name="teacher")
        save_key(key, path)
    return load_key(path)


def _prompts(work: Path, train_count: int, audit_count: int) -> tuple[Path, Path]:
    """Built-in prompts plus one 'explain this function' prompt per stdlib docstring, split
    into training and audit prompts by a hash of each id (the split does not move when the
    counts change)."""
    records = [{"id": p.id, "prompt": p.text} for p in corpora.builtin_prompts()]
    records += [
        {
            "id": f"stdlib/{d.module}.{d.name}",
            "prompt": f"Explain what {d.module}.{d.name} does in Python and when to use it. "
            f"Its documentation begins: {corpora.first_sentence(d.doc)}",
        }
        for d in corpora.stdlib_docs()
    ]
    train, held_out = [], []
    for record in records:
        bucket = int(hashlib.sha256(record["id"].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held_out if bucket < AUDIT_SHARE else train).append(record)
    paths = work / "prompts-train.jsonl", work / "prompts-audit.jsonl"
    for path, chosen in zip(paths, (train[:train_count], held_out[:audit_count]), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return paths


def _capture(
    args: argparse.Namespace,
    teacher: LocalTeacher,
    prompts: Path,
    out: Path,
    watermarked: bool = False,
    spec: str = ALIAS,
) -> Store:
    """One store of ``prompts`` (created or resumed), sampled at temperature 1 from
    ``teacher`` (named ``spec`` in the store's fingerprint)."""
    config = GenerateConfig(
        teacher=spec,
        prompts=prompts,
        out=out,
        top_k=0,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        batch_size=args.batch_size,
        rows_per_shard=args.batch_size,
        watermark=args.work / "keys" / "teacher.key" if watermarked else None,
    )
    started = time.perf_counter()
    result = generate(config, teacher=teacher)
    if result.written:
        print(f"  {out.name}: {result.written} rows in {time.perf_counter() - started:.0f} s")
    return Store.open(out)


def _mixed_store(out: Path, marked: Store, plain: Store, share: float) -> Path:
    """A store answering each training prompt once: with the watermarked answer for the
    ``share`` of prompts a hash of the id picks, and the unwatermarked one for the rest."""
    if (out / "manifest.json").exists() and Store.open(out).done_ids():
        return out
    answers = {r["id"]: r for r in plain.rows()}
    chosen = []
    for row in marked.rows():
        bucket = int(hashlib.sha256(f"mix/{row['id']}".encode()).hexdigest()[:8], 16)
        use_marked = bucket / 0xFFFFFFFF < share
        chosen.append(row if use_marked or row["id"] not in answers else answers[row["id"]])
    store = Store.create_or_resume(out, {**plain.fingerprint, "mix_watermarked": share})
    for start in range(0, len(chosen), 256):
        store.append(chosen[start : start + 256])
    return out


def _train(args: argparse.Namespace, teacher: LocalTeacher, data: Path, out: Path) -> Any:
    """A ``prune:10`` student, sequence-level KD on ``data``, ``--student-tokens`` targets."""
    from transformers import AutoModelForCausalLM

    final = out / "final"
    if not (final / "config.json").exists():
        config = DistillConfig(
            data=data,
            out=out,
            student=f"prune:{STUDENT_LAYERS}",
            teacher=ALIAS,
            objective="sft",
            max_tokens=args.student_tokens,
            batch_size=8,
            learning_rate=args.learning_rate,
            warmup_steps=10,
            save_every=25,
            keep_checkpoints=1,
        )
        resume = any((out / "checkpoints").glob("step-*"))
        student = None if resume else prune_layers(teacher.model, STUDENT_LAYERS)
        started = time.perf_counter()
        distill(config, resume=resume, teacher=teacher, student=student)
        print(f"  student {out.name}: trained in {time.perf_counter() - started:.0f} s")
    return AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()


def _audit(args: argparse.Namespace, model: Any, corpus: list[list[int]], key: Key) -> dict:
    """Reading-mode audit of ``model`` on ``corpus``, and the audit tokens needed."""
    history = key.history
    predicted = top1_predictions(model.eval(), corpus, history, batch_size=16)
    collector = PairCollector(history, frequent=frequent_kgrams(corpus, history + 1, args.frequent))
    for ids, tokens in zip(corpus, predicted, strict=True):
        collector.add_prediction(ids, tokens)
    return _record(args, "reading", collector.result, key)


def _sampled(args: argparse.Namespace, answers: Store, key: Key) -> dict:
    """Sampling-mode audit: the detector over the pooled distinct pairs of the suspect's
    answers (each answer's prompt is its context, the prompt's own pairs are not scored)."""
    collector = PairCollector(key.history)
    for row in answers.rows():
        collector.add_sample(row["prompt_token_ids"], row["completion_token_ids"])
    return _record(args, "sample", collector.result, key)


def _record(args: argparse.Namespace, mode: str, found: Candidates, key: Key) -> dict:
    """The verdict with its null control, the tokens needed and the p-value curve."""
    result = verdict(mode, "suspect", found, [key], null_trials=args.null_keys, null_seed=7)
    record = result.as_dict()
    record["tokens_needed"] = _tokens_needed(found, key)
    record["curve"] = _curve(found, key)
    return record


def _report(mode: str, name: str, row: dict[str, Any]) -> None:
    print(
        f"  {mode} audit {name}: p = {row['p_value']:.3g} over {row['scored_tokens']} tokens; "
        f"needed {row['tokens_needed']}; null KS p = {row['null']['ks_p_value']:.3g}"
    )


def _slug(name: str) -> str:
    return name.split(" ")[0]


def _prefix(found: Candidates, n: int) -> Candidates:
    pairs = dict.fromkeys(list(found.pairs)[:n])
    return Candidates(found.history, pairs, found.positions, found.excluded, found.repeats)


def _curve(found: Candidates, key: Key) -> list[dict[str, Any]]:
    """p-value over the first n distinct pairs, n doubling from 250."""
    points, n = [], 250
    while True:
        n = min(n, len(found.pairs))
        scored = score_key(_prefix(found, n), key)
        points.append({"tokens": scored.scored_tokens, "p_value": scored.p_value})
        if n == len(found.pairs):
            return points
        n *= 2


def _tokens_needed(found: Candidates, key: Key) -> int | None:
    """The fewest leading distinct pairs (to 1 %) whose p-value is below 1e-6."""
    total = len(found.pairs)
    if score_key(found, key).p_value >= TARGET:
        return None
    low, high = 1, total
    while high - low > max(1, total // 100):
        middle = (low + high) // 2
        if score_key(_prefix(found, middle), key).p_value < TARGET:
            high = middle
        else:
            low = middle
    return score_key(_prefix(found, high), key).scored_tokens


def _green_share(store: Store, key: Key) -> float:
    """Share of distinct (context, token) pairs of the store's completions that are green."""
    from retort.watermark.detect import detect_pooled

    rows = list(store.rows())
    result = detect_pooled(
        [r["completion_token_ids"] for r in rows],
        key,
        contexts=[r["prompt_token_ids"] for r in rows],
    )
    return result.score / max(1, result.scored_tokens)


def _train_summary(out: Path) -> dict[str, Any]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    steps = [x for x in lines if "loss" in x]
    return {
        "steps": steps[-1].get("step") if steps else None,
        "target_tokens": steps[-1].get("tokens_seen") if steps else None,
        "final_loss": float(np.mean([x["loss"] for x in steps[-10:]])) if steps else None,
    }


def _tokens(store: Store) -> int:
    return sum(len(r["completion_token_ids"]) for r in store.rows())


def _count(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def markdown(results: dict[str, Any]) -> str:
    """The table of docs/watermark.md: each suspect in reading and in sampling mode."""
    lines = [
        "| suspect | watermarked training data | mode | p (real key) | audit tokens scored "
        "| tokens for p < 1e-6 | null keys: KS p | null keys: min p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    shares = {
        "teacher": "none (the teacher itself)",
        "prune (untrained)": "none",
        **{name: f"{round(share * 100)} %" for name, share in MIXES.items()},
    }
    modes = {"reading": results["audits"], "sampling": results.get("sampled", {})}
    for name in results["audits"]:
        for mode, rows in modes.items():
            if name not in rows:
                continue
            row, null = rows[name], rows[name]["null"]
            lines.append(
                f"| {name} | {shares[name]} | {mode} | {row['p_value']:.2g} | "
                f"{row['scored_tokens']:,} | "
                f"{row['tokens_needed'] if row['tokens_needed'] else 'not reached'} | "
                f"{null['ks_p_value']:.2f} | {min(null['p_values']):.2g} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
