"""Benchmark: teacher capture throughput, side by side in one run (not a test).

On the embedded teacher (SmolLM2-135M-Instruct), over the same built-in prompts:
  local batched generation  vs  one prompt at a time            (new tokens / s)
  score mode                vs  generate mode, same text         (scored positions / s)
  HTTP capture through `retort serve`  vs  local batched        (new tokens / s)
and the bytes each stored completion token costs on disk; then the q8 codec's quality
(bytes per pair, logprob error, decoded mass, and the KD loss of a *perfect* student, which
should be 0) on real SmolLM2 rows and on synthetic flat, peaked and degenerate rows.

    .venv/bin/python bench/capture.py [--prompts 24] [--max-new-tokens 32]
    .venv/bin/python bench/capture.py --codec-only --out bench/results/capture-codec.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from retort.capture.runner import generate
from retort.config import GenerateConfig
from retort.models.embedded import ALIAS
from retort.quickstart.pipeline import PROMPTS
from retort.serve.app import create_app
from retort.teachers.local import LocalTeacher

RESULTS = Path(__file__).parent / "results" / "capture.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--codec-only", action="store_true", help="only the plain and q8 captures and the codec"
    )
    args = parser.parse_args()
    if args.codec_only:
        codec_only(args)
        return

    from retort.serve.background import serve_in_thread

    teacher = LocalTeacher.load(ALIAS)
    work, records, common = bench_prompts(args)

    def run(name: str, config: GenerateConfig, **kwargs) -> dict:
        started = time.perf_counter()
        result = generate(config, **kwargs)
        seconds = time.perf_counter() - started
        counts = result.store.recount()
        size = sum(p.stat().st_size for p in result.store.shard_paths())
        row = {
            "name": name,
            "rows": counts["rows"],
            "tokens": counts["completion_tokens"],
            "seconds": seconds,
            "tokens_per_s": counts["completion_tokens"] / seconds,
            "bytes_per_token": size / max(counts["completion_tokens"], 1),
        }
        print(
            f"{name:28} {row['tokens']:6} tokens {seconds:7.1f} s "
            f"{row['tokens_per_s']:7.1f} tok/s {row['bytes_per_token']:6.1f} B/token",
            flush=True,
        )
        return row

    rows = [
        run(
            "local batched (8)",
            GenerateConfig(teacher=ALIAS, out=work / "batched", batch_size=8, **common),
            teacher=teacher,
        ),
        run(
            "local one at a time",
            GenerateConfig(teacher=ALIAS, out=work / "single", batch_size=1, **common),
            teacher=teacher,
        ),
    ]
    generated = {
        r["id"]: r["completion"]
        for r in generate(
            GenerateConfig(teacher=ALIAS, out=work / "batched", batch_size=8, **common),
            teacher=teacher,
        ).store.rows()
    }
    scored_prompts = work / "score.jsonl"
    scored_prompts.write_text(
        "".join(json.dumps({**r, "completion": generated[r["id"]] or "."}) + "\n" for r in records)
    )
    rows.append(
        run(
            "score mode (8)",
            GenerateConfig(
                teacher=ALIAS,
                out=work / "score",
                mode="score",
                batch_size=8,
                **{**common, "prompts": scored_prompts},
            ),
            teacher=teacher,
        )
    )
    rows.append(
        run(
            "local batched, q8 codec",
            GenerateConfig(teacher=ALIAS, out=work / "q8", batch_size=8, codec="q8", **common),
            teacher=teacher,
        )
    )
    with serve_in_thread(create_app(teacher, ALIAS, max_batch=8, wait_ms=20)) as url:
        rows.append(
            run(
                "HTTP via retort serve (c=8)",
                GenerateConfig(
                    teacher=url, teacher_model=ALIAS, out=work / "http", concurrency=8, **common
                ),
            )
        )
        rows.append(raw_openai_sdk(url, teacher, records, args.max_new_tokens, concurrency=8))

    by = {r["name"]: r for r in rows}
    ratios = {
        "batched_vs_single_tokens_per_s": by["local batched (8)"]["tokens_per_s"]
        / by["local one at a time"]["tokens_per_s"],
        "score_vs_generate_positions_per_s": by["score mode (8)"]["tokens_per_s"]
        / by["local batched (8)"]["tokens_per_s"],
        "http_vs_local_tokens_per_s": by["HTTP via retort serve (c=8)"]["tokens_per_s"]
        / by["local batched (8)"]["tokens_per_s"],
        "runner_overhead_vs_raw_openai_sdk_pct": 100
        * (
            by["HTTP via retort serve (c=8)"]["seconds"] / by["raw openai SDK (c=8)"]["seconds"] - 1
        ),
    }
    for name, value in ratios.items():
        print(f"{name:38} {value:6.2f}{'%' if name.endswith('pct') else 'x'}")
    codec_report = codec_quality(work / "batched", work / "q8", teacher)
    print(json.dumps(codec_report))
    report = {
        "codec": codec_report,
        "command": f"python bench/capture.py --prompts {args.prompts} "
        f"--max-new-tokens {args.max_new_tokens}",
        "machine": f"{platform.machine()}, CPU",
        "teacher": ALIAS,
        "rows": rows,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def bench_prompts(args: argparse.Namespace) -> tuple[Path, list[dict], dict]:
    """A scratch folder holding the first ``--prompts`` built-in prompts, those records, and
    the capture settings every bench row shares."""
    work = Path(tempfile.mkdtemp(prefix="retort-bench-"))
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[: args.prompts]]
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    return work, records, {"prompts": prompts, "max_new_tokens": args.max_new_tokens, "top_k": 20}


def codec_only(args: argparse.Namespace) -> None:
    """The codec measurement alone: one plain and one q8 capture of the same prompts."""
    from retort.capture import codec

    teacher = LocalTeacher.load(ALIAS)
    work, _, common = bench_prompts(args)
    for name, codec_choice in (("plain", "plain"), ("q8", "q8")):
        config = GenerateConfig(
            teacher=ALIAS, out=work / name, batch_size=8, codec=codec_choice, **common
        )
        generate(config, teacher=teacher)
    report = {
        "codec": codec.NAME,
        "real": codec_quality(work / "plain", work / "q8", teacher),
        "synthetic": synthetic_codec_quality(),
        "command": f"python bench/capture.py --codec-only --prompts {args.prompts} "
        f"--max-new-tokens {args.max_new_tokens} --out {args.out}",
        "machine": f"{platform.machine()}, CPU",
        "teacher": ALIAS,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def raw_openai_sdk(
    url: str, teacher: LocalTeacher, records: list[dict], max_new_tokens: int, concurrency: int
) -> dict:
    """The same requests with the official SDK and nothing else: no store, retries or limits."""
    import asyncio

    from openai import AsyncOpenAI

    from retort.teachers.chat import chat_messages, render_prompt

    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(record: dict) -> int:
        prompt_ids = render_prompt(teacher.tokenizer, chat_messages(record["prompt"], None, None))
        async with gate:
            reply = await client.completions.create(
                model=ALIAS,
                prompt=prompt_ids,
                max_tokens=max_new_tokens,
                temperature=0,
                logprobs=20,
                extra_body={"return_tokens_as_token_ids": True},
            )
        return reply.usage.completion_tokens

    async def everything() -> int:
        return sum(await asyncio.gather(*(one(r) for r in records)))

    started = time.perf_counter()
    tokens = asyncio.run(everything())
    seconds = time.perf_counter() - started
    print(
        f"{'raw openai SDK (c=8)':28} {tokens:6} tokens {seconds:7.1f} s "
        f"{tokens / seconds:7.1f} tok/s",
        flush=True,
    )
    return {
        "name": "raw openai SDK (c=8)",
        "rows": len(records),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "bytes_per_token": None,
    }


def int32_fp16_bytes_per_pair(store_path: Path) -> float:
    """The usual baseline: top-k ids as int32 lists and logprobs as float16 lists, zstd."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from retort.capture.store import Store

    store = Store.open(store_path)
    table = store.read_table(["topk_ids", "topk_logprobs"])
    halves = pa.array(
        [
            [np.asarray(p, dtype=np.float16) for p in row]
            for row in table["topk_logprobs"].to_pylist()
        ],
        pa.list_(pa.list_(pa.float16())),
    )
    buffer = io.BytesIO()
    pq.write_table(
        pa.table({"topk_ids": table["topk_ids"], "topk_logprobs": halves}),
        buffer,
        compression="zstd",
    )
    return buffer.tell() / (store.recount()["completion_tokens"] * int(store.fingerprint["top_k"]))


def topk_bytes_per_pair(store_path: Path) -> float:
    """Compressed bytes of the top-k columns per stored (id, logprob) pair."""
    import pyarrow.parquet as pq

    from retort.capture.store import Store

    store = Store.open(store_path)
    size = 0
    for shard in store.shard_paths():
        meta = pq.ParquetFile(shard).metadata
        for group in range(meta.num_row_groups):
            for column in range(meta.num_columns):
                chunk = meta.row_group(group).column(column)
                if chunk.path_in_schema.startswith(("topk_ids", "topk_logprobs")):
                    size += chunk.total_compressed_size
    pairs = store.recount()["completion_tokens"] * int(store.fingerprint["top_k"])
    return size / pairs


def codec_quality(plain_path: Path, packed_path: Path, teacher: LocalTeacher) -> dict:
    """q8 vs plain on the same capture: bytes per pair, logprob error, KD loss change, and the
    KD loss of a perfect student (the teacher itself) on the decoded values."""
    import torch

    from retort.capture.store import Store
    from retort.losses import sparse_divergence
    from retort.models.pruning import prune_layers

    plain = {r["id"]: r for r in Store.open(plain_path).rows()}
    packed = {r["id"]: r for r in Store.open(packed_path).rows()}
    errors = np.concatenate(
        [
            np.abs(
                np.asarray(packed[i]["topk_logprobs"]) - np.asarray(plain[i]["topk_logprobs"])
            ).ravel()
            for i in plain
            if plain[i]["topk_logprobs"]
        ]
    )
    student = prune_layers(teacher.model, 10).eval()  # an untrained student: a real KD loss
    raw_loss = packed_loss = 0.0
    perfect: dict[str, list[float]] = {"forward_kl": [], "reverse_kl": []}
    masses: list[float] = []
    with torch.no_grad():
        for key, row in plain.items():
            if not row["topk_ids"]:
                continue
            ids = torch.tensor([row["prompt_token_ids"] + row["completion_token_ids"]])
            start = len(row["prompt_token_ids"]) - 1
            own = teacher.model(ids).logits[0, start : start + len(row["completion_token_ids"])]
            decoded = torch.tensor(packed[key]["topk_logprobs"])
            masses.extend(decoded.double().exp().sum(-1).tolist())
            for kind, values in perfect.items():
                values.extend(
                    sparse_divergence(
                        own, torch.tensor(packed[key]["topk_ids"]), decoded, kind, reduction="none"
                    ).tolist()
                )
            ids = torch.tensor([row["prompt_token_ids"] + row["completion_token_ids"]])
            start = len(row["prompt_token_ids"]) - 1
            logits = student(ids).logits[0, start : start + len(row["completion_token_ids"])]
            raw_loss += float(
                sparse_divergence(
                    logits,
                    torch.tensor(row["topk_ids"]),
                    torch.tensor(row["topk_logprobs"]),
                    reduction="sum",
                )
            )
            packed_loss += float(
                sparse_divergence(
                    logits,
                    torch.tensor(packed[key]["topk_ids"]),
                    torch.tensor(packed[key]["topk_logprobs"]),
                    reduction="sum",
                )
            )
    return {
        "plain_bytes_per_pair": topk_bytes_per_pair(plain_path),
        "int32_fp16_bytes_per_pair": int32_fp16_bytes_per_pair(plain_path),
        "q8_bytes_per_pair": topk_bytes_per_pair(packed_path),
        "mean_abs_logprob_error": float(errors.mean()),
        "max_abs_logprob_error": float(errors.max()),
        "kd_loss_relative_change": abs(packed_loss - raw_loss) / raw_loss,
        "max_decoded_mass": max(masses),
        **{
            f"perfect_student_{kind}_{stat}": float(fn(values))
            for kind, values in perfect.items()
            for stat, fn in (("mean", np.mean), ("max", np.max))
        },
    }


def synthetic_codec_quality(positions: int = 300, vocab: int = 49152, k: int = 20) -> dict:
    """The codec on rows whose true distribution is known: Gaussian logits of scale sigma
    (1: flat, top-20 holds ~0.1% of the mass; 8: peaked, the tail is ~1e-2 and often far
    smaller), plus degenerate rows with -inf and vLLM's -9999 entries. The perfect student is
    the distribution itself, so every KD loss reported here should be 0."""
    import torch

    from retort.capture import codec
    from retort.losses import sparse_divergence

    generator = torch.Generator().manual_seed(1)
    report = {}
    for sigma in (1.0, 4.0, 8.0):
        logits = torch.randn(positions, vocab, generator=generator, dtype=torch.float64) * sigma
        top = torch.log_softmax(logits, -1).topk(k)
        report[f"sigma_{sigma:g}"] = _round_trip(
            logits.float(), top.indices.tolist(), top.values.tolist(), codec, sparse_divergence
        )
    degenerate = torch.full((4, vocab), -40.0, dtype=torch.float64)
    degenerate[:, :3] = torch.tensor([[0.0, -2.4, -1e9], [0.0, -2.95, -1e9]] * 2)[:, :3]
    degenerate[2:, 2] = float("-inf")  # masked by the server: exactly zero
    logprobs = torch.log_softmax(degenerate, -1)
    ids = [[0, 1, 2]] * 4
    values = logprobs[:, :3].tolist()
    values[0][2] = values[1][2] = -9999.0  # vLLM writes -inf as -9999
    report["minus_inf_and_-9999"] = _round_trip(
        degenerate.float(), ids, values, codec, sparse_divergence
    )
    return report


def _round_trip(logits, ids, values, codec, sparse_divergence) -> dict:
    """Encode and decode one block of rows; error, decoded mass, perfect-student KD loss."""
    import torch

    dictionary = codec.build_dictionary([ids])
    id_blob, lp_blob = codec.encode_row(ids, values, dictionary)
    decoded_ids, decoded = codec.decode_row(id_blob, lp_blob, len(ids), len(ids[0]), dictionary)
    true = np.asarray(values, dtype=np.float64)
    got = np.asarray(decoded, dtype=np.float64)
    zero = true <= -9999
    out = {
        "ids_exact": decoded_ids == ids,
        "zero_probability_entries_exact": bool(np.isneginf(got[zero]).all()),
        "mean_abs_logprob_error": float(np.abs(got - true)[~zero].mean()),
        "max_abs_logprob_error": float(np.abs(got - true)[~zero].max()),
        "max_decoded_mass": float(np.exp(got).sum(-1).max()),
        "bytes_per_pair_raw": (len(id_blob) + len(lp_blob)) / true.size,
    }
    for kind in ("forward_kl", "reverse_kl"):
        loss = sparse_divergence(
            logits, torch.tensor(decoded_ids), torch.tensor(decoded), kind, reduction="none"
        )
        out[f"perfect_student_{kind}_mean"] = float(loss.mean())
        out[f"perfect_student_{kind}_max"] = float(loss.max())
    return out


if __name__ == "__main__":
    main()
