"""Benchmark: the watermark's calibration, power and cost on the embedded teacher (not a test).

1. Calibration: null texts (human passages from installed files, and the teacher's own
   unwatermarked completions), each tested with fresh keys of every scheme: KS against
   uniform, false-positive rate at 1e-2/1e-3/1e-4 vs nominal, exact p vs the normal
   approximation, by scored-token count.
2. Power: watermarked completions per scheme: tokens needed for p < 1e-6, detection after
   truncation, random word edits and a paraphrase by the teacher itself.
3. Cost: the unwatermarked teacher's NLL of watermarked vs unwatermarked completions of the
   same prompts, and reference accuracy with and without the watermark (paired tests).

Generation goes through retort's capture (one store per prompt set and setting, under
``--work``), so a killed run resumes where it stopped; the calibration is cached there too.

    .venv/bin/python bench/watermark.py [--power-prompts 128] [--null-texts 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import watermark_null as null
import watermark_power as power
import watermark_tables as tables

from retort.capture.runner import generate
from retort.capture.store import Store
from retort.config import GenerateConfig
from retort.guard.detect import corpora
from retort.models.embedded import ALIAS
from retort.teachers.local import LocalTeacher
from retort.watermark.keys import Key, load_key, new_key, save_key

RESULTS = Path(__file__).parent / "results" / "watermark.json"
SCHEMES = {  # name -> new_key arguments (gamma 0.25, delta 2 are the defaults)
    "kgw-lefthash-h1": {"scheme": "kgw", "seeding": "lefthash"},
    "kgw-selfhash-h4": {"scheme": "kgw", "seeding": "selfhash"},
    "gumbel-h4": {"scheme": "gumbel"},
}
LONG_CATEGORIES = ("explain", "instruct", "rewrite")  # prompts whose answers run long
TRUNCATIONS, EDITS = (25, 50, 100), (0.10, 0.25, 0.50)
PARAPHRASE = "Paraphrase the following text:\n\n{text}"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    teacher = LocalTeacher.load(ALIAS)
    keys = {name: _key(args.work, name, kw, teacher.tokenizer) for name, kw in SCHEMES.items()}
    settings = [("none", 1.0), *((name, 1.0) for name in keys)]
    if args.greedy:
        settings += [("none", 0.0), ("kgw-lefthash-h1", 0.0)]

    power_prompts = _prompts(args.work / "power.jsonl", _long_prompts(args.power_prompts))
    accuracy_prompts = _prompts(args.work / "accuracy.jsonl", _reference_prompts(args.accuracy))
    power_rows = {
        s: _capture(args, teacher, power_prompts, s, args.max_new_tokens) for s in settings
    }
    accuracy_rows = {
        s: _capture(args, teacher, accuracy_prompts, s, args.accuracy_tokens) for s in settings
    }
    paraphrased = _paraphrase(args, teacher, power_rows, list(keys))

    results: dict[str, Any] = {
        "bench": "watermark",
        "machine": {"platform": platform.platform(), "threads": args.threads, "gpu": False},
        "teacher": ALIAS,
        "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
    }
    results["calibration"] = _calibration(args, teacher.tokenizer, [power_rows, accuracy_rows])
    results["power"] = _power(args, teacher, keys, power_rows, paraphrased)
    results["cost"] = _cost(args, teacher, keys, power_rows, accuracy_rows)
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(tables.markdown(results))
    print(f"\nwrote {args.out} in {results['seconds']:.0f} s")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("bench/work/watermark"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--null-texts", type=int, default=10_000, help="human + model nulls")
    parser.add_argument("--null-keys", type=int, default=3, help="fresh keys per null text")
    parser.add_argument("--fixed-keys", type=int, default=10, help="keys tested on every text")
    parser.add_argument("--power-prompts", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--accuracy", type=int, default=232, help="prompts with a reference")
    parser.add_argument("--accuracy-tokens", type=int, default=20)
    parser.add_argument("--paraphrase", type=int, default=16, help="texts per scheme")
    parser.add_argument("--greedy", action="store_true", help="also KGW and no watermark, greedy")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    return parser.parse_args()


def _key(work: Path, name: str, kwargs: dict[str, Any], tokenizer: Any) -> Key:
    """The scheme's key, kept under ``work/keys`` so a resumed capture uses the same one."""
    path = work / "keys" / f"{name}.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_key(new_key(**kwargs, tokenizer=tokenizer, name=name), path)
    return load_key(path)


def _long_prompts(count: int) -> list[dict[str, Any]]:
    """``count`` prompts of the long-answer categories, taken in turn from each."""
    pools = [[p for p in corpora.builtin_prompts() if p.category == c] for c in LONG_CATEGORIES]
    picked = [pool[i] for i in range(count) for pool in pools if i < len(pool)][:count]
    return [{"id": p.id, "prompt": p.text} for p in picked]


def _reference_prompts(count: int) -> list[dict[str, Any]]:
    """``count`` prompts with a reference answer, taken in turn from each category."""
    with_ref = [p for p in corpora.builtin_prompts() if p.reference]
    categories = sorted({p.category for p in with_ref})
    pools = [[p for p in with_ref if p.category == c] for c in categories]
    picked = [pool[i] for i in range(count) for pool in pools if i < len(pool)][:count]
    return [{"id": p.id, "prompt": p.text, "reference": p.reference} for p in picked]


def _prompts(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _capture(
    args: argparse.Namespace,
    teacher: LocalTeacher,
    prompts: Path,
    setting: tuple[str, float],
    max_new_tokens: int,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """One store (created or resumed) of ``prompts`` under a (key name, temperature) setting."""
    scheme, temperature = setting
    out = args.work / "stores" / (name or f"{prompts.stem}-{scheme}-t{temperature:g}")
    config = GenerateConfig(
        teacher=ALIAS,
        prompts=prompts,
        out=out,
        top_k=0,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=args.batch_size,
        rows_per_shard=args.batch_size,
        watermark=None if scheme == "none" else args.work / "keys" / f"{scheme}.key",
    )
    started = time.perf_counter()
    result = generate(config, teacher=teacher)
    if result.written:
        print(f"  {out.name}: {result.written} rows in {time.perf_counter() - started:.0f} s")
    order = {json.loads(line)["id"]: i for i, line in enumerate(prompts.open())}
    rows = [r for r in Store.open(out).rows() if r["id"] in order]
    return sorted(rows, key=lambda r: order[r["id"]])


def _paraphrase(
    args: argparse.Namespace,
    teacher: LocalTeacher,
    rows: dict[tuple[str, float], list[dict[str, Any]]],
    schemes: list[str],
) -> dict[str, list[dict[str, Any]]]:
    """The unwatermarked teacher's paraphrase of the first ``--paraphrase`` watermarked rows of
    each scheme, all in one store (one batch: generation here costs per step, not per row)."""
    records = [
        {"id": f"{scheme}/{r['id']}", "prompt": PARAPHRASE.format(text=r["completion"])}
        for scheme in schemes
        for r in rows[(scheme, 1.0)][: args.paraphrase]
    ]
    path = _prompts(args.work / "paraphrase.jsonl", records)
    done = _capture(args, teacher, path, ("none", 1.0), args.max_new_tokens, "paraphrase")
    return {s: [r for r in done if r["id"].startswith(f"{s}/")] for s in schemes}


def _calibration(
    args: argparse.Namespace, tokenizer: Any, row_sets: list[dict[tuple[str, float], list]]
) -> dict[str, Any]:
    """Null tests of every scheme with fresh keys (cached under ``--work``)."""
    model = [
        {"kind": "model", "token_ids": r["completion_token_ids"], "context": r["prompt_token_ids"]}
        for rows in row_sets
        for (scheme, _), setting_rows in rows.items()
        if scheme == "none"
        for r in setting_rows
    ]
    name = f"calibration-v2-{args.null_texts}x{args.null_keys}-f{args.fixed_keys}-{len(model)}"
    cache = args.work / f"{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    human = null.human_texts(tokenizer, args.null_texts - len(model))
    texts = [{**t, "kind": "human"} for t in human] + model
    out: dict[str, Any] = {
        "texts": {"human": len(human), "model": len(model)},
        "human_sources": _count(t["source"] for t in human),
        "keys_per_text": args.null_keys,
        "fixed_keys": args.fixed_keys,
    }
    for name, kwargs in SCHEMES.items():
        started = time.perf_counter()

        def make_key(key_name: str, kwargs: dict[str, Any] = kwargs) -> Key:
            return new_key(**kwargs, name=key_name)

        out[name] = null.calibration(null.null_tests(texts, make_key, args.null_keys))
        fixed = [make_key(f"fixed-{i}") for i in range(args.fixed_keys)]
        out[name]["fixed_key"] = null.fixed_key_spread(texts, fixed)
        print(f"  calibration {name}: {time.perf_counter() - started:.0f} s")
    cache.write_text(json.dumps(out, indent=2))
    return out


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items()))


def _power(
    args: argparse.Namespace,
    teacher: LocalTeacher,
    keys: dict[str, Key],
    power_rows: dict[tuple[str, float], list[dict[str, Any]]],
    paraphrased: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """Tokens needed and detection after truncation, edits and paraphrase, per setting."""
    tokenizer = teacher.tokenizer
    vocabulary = sorted({w for d in corpora.stdlib_docs() for w in d.doc.split() if w.isalpha()})
    out: dict[str, Any] = {}
    for (scheme, temperature), rows in power_rows.items():
        if scheme == "none":
            continue
        key = keys[scheme]
        curves = [
            power.prefix_p_values(r["completion_token_ids"], key, r["prompt_token_ids"])
            for r in rows
        ]
        entry: dict[str, Any] = {
            "texts": len(rows),
            "mean_tokens": float(np.mean([len(r["completion_token_ids"]) for r in rows])),
            "tokens_needed": power.needed_summary([power.tokens_needed(c) for c in curves]),
            "full": power.detection_rates([c[-1] if len(c) else 1.0 for c in curves]),
        }
        for length in TRUNCATIONS:
            p = [c[min(length, len(c)) - 1] if len(c) else 1.0 for c in curves]
            entry[f"truncated_{length}"] = power.detection_rates(p)
        # The goal (p < 1e-6 within 100 tokens) on the completions that ran that long.
        long = [c for c in curves if len(c) >= 100]
        entry["long_100"] = {**power.detection_rates([c[99] for c in long]), "texts": len(long)}
        entry["long_100"]["tokens_needed"] = power.needed_summary(
            [power.tokens_needed(c) for c in long]
        )
        rng = random.Random(0)
        for fraction in EDITS:
            p = [
                power.detect_text(
                    power.edit_words(r["completion"], fraction, vocabulary, rng), key, tokenizer
                )
                for r in rows
            ]
            entry[f"edited_{round(fraction * 100)}"] = power.detection_rates(p)
        if temperature == 1.0 and scheme in paraphrased:
            p = [power.detect_text(r["completion"], key, tokenizer) for r in paraphrased[scheme]]
            entry["paraphrased"] = {**power.detection_rates(p), "texts": len(p)}
        out[f"{scheme}@t{temperature:g}"] = entry
    return out


def _cost(
    args: argparse.Namespace,
    teacher: LocalTeacher,
    keys: dict[str, Key],
    power_rows: dict[tuple[str, float], list[dict[str, Any]]],
    accuracy_rows: dict[tuple[str, float], list[dict[str, Any]]],
) -> dict[str, Any]:
    """NLL and reference accuracy of each watermarked setting vs no watermark, paired."""
    out: dict[str, Any] = {}
    nll = {s: power.mean_nll(teacher, rows, args.batch_size) for s, rows in power_rows.items()}
    grades = {s: power.graded(rows) for s, rows in accuracy_rows.items()}
    for scheme, temperature in power_rows:
        if scheme == "none":
            continue
        base = ("none", temperature)
        ids = [i for i in nll[(scheme, temperature)] if i in nll[base]]
        graded_ids = [i for i in grades[(scheme, temperature)] if i in grades[base]]
        out[f"{scheme}@t{temperature:g}"] = {
            "nll": power.paired_mean(
                [nll[base][i] for i in ids], [nll[(scheme, temperature)][i] for i in ids]
            ),
            "accuracy": power.paired_accuracy(
                [grades[base][i] for i in graded_ids],
                [grades[(scheme, temperature)][i] for i in graded_ids],
            ),
        }
    return out


if __name__ == "__main__":
    main()
