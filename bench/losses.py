"""Benchmark: memory and time of KD losses at real vocabulary sizes (not a test).

Side by side, on the same inputs, forward + backward of generalized JSD (β = 0.5) for
  materialized  logits = hidden @ head.T for both models, then ``retort.losses.divergence``
  fused         ``retort.losses.fused_divergence`` (chunked; never all logits at once)
  trl           TRL's ``GKDTrainer.generalized_jsd_loss`` on materialized logits
for V ∈ {49,152, 151,936}, tokens ∈ {1,024, 4,096}, hidden ∈ {576, 2,048}, float32 on CPU.

The LoRA section (``--lora``) is an online-KD step of a LoRA student: the head is frozen, so
only the final hidden states need a gradient. Side by side on the SmolLM2 shape (V 49,152,
hidden 576, 1,024 tokens):
  fused                    trainable head (a full fine-tune): hidden and head gradients
  fused_frozen_head        frozen head (LoRA): hidden gradient only
  materialized_frozen_head the same on materialized logits

The cross-tokenizer section (``--crosstok``) is the ``cross_tokenizer`` objective's loss
(CE + top-k KD on one-to-one tokens + ULD on the other groups, a third of the positions) with a
262,144-token teacher (Gemma 3's vocabulary), for students of 49,152 and 262,144 tokens:
  store                    the teacher's stored top-20 (the path retort runs)
  live_teacher_logits      the same plus a live teacher's full logits for the batch, turned
                           into its top-20 (what a teacher forward without chunking would hold)

Each measurement runs in its own process: peak memory is that process's peak resident set
minus its peak before the loss (inputs built, libraries loaded), so methods cannot inherit each
other's high-water marks, and an out-of-memory kill costs one cell, not the run.

    .venv/bin/python bench/losses.py                # full grid → bench/results/losses.json
    .venv/bin/python bench/losses.py --quick        # V=49,152, 1,024 tokens, hidden 576 only
    .venv/bin/python bench/losses.py --lora         # LoRA section → bench/results/losses_lora.json
    .venv/bin/python bench/losses.py --crosstok     # → bench/results/losses_crosstok.json
    .venv/bin/python bench/losses.py --repeat 3     # fastest of 3 passes per cell (--lora: 5)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "losses.json"
LORA_RESULTS = RESULTS.with_name("losses_lora.json")
CROSSTOK_RESULTS = RESULTS.with_name("losses_crosstok.json")
CROSSTOK_METHODS = ("store", "live_teacher_logits")
CROSSTOK_GRID = [(49_152, 1_024, 576), (262_144, 1_024, 576)]  # student vocabularies
CROSSTOK_TEACHER_VOCAB = 262_144  # Gemma 3's
CROSSTOK_TOP_K = 20
METHODS = ("materialized", "fused", "trl")
LORA_METHODS = ("fused", "fused_frozen_head", "materialized_frozen_head")
LORA_GRID = [(49_152, 1_024, 576)]  # SmolLM2-135M's vocabulary and width
LORA_REPEAT = 5  # the ratios are small: keep each cell's fastest of five passes
FROZEN = "_frozen_head"  # method suffix: the student head takes no gradient (LoRA)
MEMORY_LIMIT_GB = 20  # of the 24 GB machine


def measure(method: str, vocab: int, tokens: int, hidden: int, chunk: int, repeat: int = 1) -> dict:
    """Forward + backward in this process, ``repeat`` times; returns the fastest time, the
    extra peak memory and the values."""

    # A failed allocation then raises a clean error instead of waking the kernel's OOM killer.
    limit = MEMORY_LIMIT_GB << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    loss_fn = build(method, vocab=64, tokens=8, hidden=16, chunk=4)[0]
    loss_fn().backward()  # warm-up: thread pools and kernels initialise outside the measurement
    loss_fn, student_hidden, student_head = build(method, vocab, tokens, hidden, chunk)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seconds, cpu_seconds = [], []
    for _ in range(repeat):
        student_hidden.grad = student_head.grad = None  # each pass writes fresh gradients
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = loss_fn()
        loss.backward()
        seconds.append(time.perf_counter() - start)
        # CPU time of this process (all its threads): less swayed than wall time by other
        # work on a shared machine.
        cpu_seconds.append(time.process_time() - cpu_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": min(seconds),  # the least disturbed pass
        "cpu_seconds": min(cpu_seconds),
        "repeat": repeat,
        "peak_extra_mb": (peak - before) / 1024,
        "loss": float(loss),
        "grad_hidden_norm": float(student_hidden.grad.norm()),
        # A frozen head must come out with no gradient at all (None), not a zero one.
        "grad_head_norm": None if student_head.grad is None else float(student_head.grad.norm()),
    }


def build(method: str, vocab: int, tokens: int, hidden: int, chunk: int):
    """The inputs of one cell and a closure computing its loss by ``method``."""
    import torch

    frozen = method.endswith(FROZEN)
    method = method.removesuffix(FROZEN)
    torch.manual_seed(0)
    student_hidden = torch.randn(tokens, hidden).requires_grad_()
    student_head = (torch.randn(vocab, hidden) * hidden**-0.5).requires_grad_(not frozen)
    teacher_hidden = torch.randn(tokens, hidden)
    teacher_head = torch.randn(vocab, hidden) * hidden**-0.5
    labels = torch.zeros(1, tokens, dtype=torch.long)  # all positions count

    if method in CROSSTOK_METHODS:
        return crosstok_loss(method, student_hidden, student_head, teacher_hidden)
    if method == "trl":
        from trl.experimental.gkd.gkd_trainer import GKDTrainer

        def loss_fn():
            return GKDTrainer.generalized_jsd_loss(
                (student_hidden @ student_head.T)[None],
                (teacher_hidden @ teacher_head.T)[None],
                labels=labels,
                beta=0.5,
            )
    elif method == "fused":
        from retort.losses import fused_divergence

        def loss_fn():
            return fused_divergence(
                student_hidden,
                student_head,
                teacher_hidden,
                teacher_head,
                "jsd",
                beta=0.5,
                chunk_size=chunk,
            )
    else:
        from retort.losses import divergence

        def loss_fn():
            with torch.no_grad():
                teacher_logits = teacher_hidden @ teacher_head.T
            return divergence(student_hidden @ student_head.T, teacher_logits, "jsd", beta=0.5)

    return loss_fn, student_hidden, student_head


def crosstok_loss(method: str, student_hidden, student_head, teacher_hidden):
    """The cross_tokenizer objective's terms on synthetic alignments: every third position
    heads a two-token ULD group, the rest match one to one."""
    import torch
    import torch.nn.functional as F

    from retort.losses import sparse_divergence
    from retort.losses.uld import uld_groups_loss

    tokens, hidden = student_hidden.shape
    vocab = student_head.shape[0]
    generator = torch.Generator().manual_seed(1)
    targets = torch.randint(vocab, (1, tokens), generator=generator)
    topk_ids = torch.randint(vocab, (1, tokens, CROSSTOK_TOP_K), generator=generator)
    topk_logprobs = torch.log_softmax(torch.randn(1, tokens, CROSSTOK_TOP_K + 1), -1)[..., 1:]
    topk_logprobs = topk_logprobs.sort(-1, descending=True).values
    position = torch.arange(tokens)
    heads = torch.where(position % 3 == 0, position, position - 1)[None]
    heads[:, position % 3 == 2] = -1  # outside groups: matched one to one
    matched = heads < 0
    chain = torch.full((1, tokens), -0.5)
    teacher_head = torch.randn(CROSSTOK_TEACHER_VOCAB, hidden) * hidden**-0.5

    def loss_fn():
        teacher_logprobs = topk_logprobs
        if method == "live_teacher_logits":
            with torch.no_grad():
                full = torch.log_softmax(teacher_hidden @ teacher_head.T, -1)[None]
                teacher_logprobs = full.topk(CROSSTOK_TOP_K, -1).values
        logits = (student_hidden @ student_head.T)[None]
        ce = F.cross_entropy(logits[0], targets[0], reduction="sum")
        kd = sparse_divergence(
            logits, topk_ids, teacher_logprobs, "forward_kl", mask=matched, reduction="sum"
        )
        uld, _ = uld_groups_loss(logits, targets, heads, teacher_logprobs, chain)
        return (ce + kd + uld) / tokens

    return loss_fn, student_hidden, student_head


def crosstok_section(repeat: int, out: Path) -> None:
    rows = []
    for vocab, tokens, hidden in CROSSTOK_GRID:
        row = {"student_vocab": vocab, "teacher_vocab": CROSSTOK_TEACHER_VOCAB}
        row |= {"vocab": vocab, "tokens": tokens, "hidden": hidden}
        for method in CROSSTOK_METHODS:
            row[method] = run_cell(method, vocab, tokens, hidden, 256, repeat)
        rows.append(row)
        print(format_row(row, CROSSTOK_METHODS), flush=True)
    report = {
        "command": "python bench/losses.py --crosstok",
        "repeat": repeat,
        "machine": f"{platform.machine()}, {_cores()} cores, CPU float32",
        "teacher_top_k": CROSSTOK_TOP_K,
        "loss": "CE + forward KL on top-k (one-to-one tokens) + ULD (groups); forward + backward",
        "rows": rows,
    }
    write(report, out)


def run_cell(
    method: str, vocab: int, tokens: int, hidden: int, chunk: int, repeat: int = 1
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--one",
        method,
        str(vocab),
        str(tokens),
        str(hidden),
        "--chunk",
        str(chunk),
        "--repeat",
        str(repeat),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
        return {"error": f"exit {done.returncode}: {last[:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest cell only")
    parser.add_argument("--lora", action="store_true", help="the frozen-head (LoRA) section only")
    parser.add_argument("--crosstok", action="store_true", help="the cross-tokenizer section only")
    parser.add_argument("--chunk", type=int, default=256, help="fused chunk size (tokens)")
    parser.add_argument("--repeat", type=int, default=None, help="passes per cell (fastest kept)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", nargs=4, metavar=("METHOD", "V", "TOKENS", "HIDDEN"))
    args = parser.parse_args()
    if args.one:
        method, vocab, tokens, hidden = args.one
        shape = (int(vocab), int(tokens), int(hidden))
        print(json.dumps(measure(method, *shape, args.chunk, args.repeat or 1)))
        return
    if args.lora:
        lora_section(args.chunk, args.repeat or LORA_REPEAT, args.out or LORA_RESULTS)
        return
    if args.crosstok:
        crosstok_section(args.repeat or 1, args.out or CROSSTOK_RESULTS)
        return

    grid = [(v, t, h) for v in (49_152, 151_936) for t in (1_024, 4_096) for h in (576, 2_048)]
    if args.quick:
        grid = grid[:1]
    rows = []
    for vocab, tokens, hidden in grid:
        row = {"vocab": vocab, "tokens": tokens, "hidden": hidden}
        for method in METHODS:
            row[method] = run_cell(method, vocab, tokens, hidden, args.chunk, args.repeat or 1)
        dense, fused = row["materialized"], row["fused"]
        if "error" not in dense and "error" not in fused:
            row["fused_vs_materialized"] = {
                "memory_ratio": fused["peak_extra_mb"] / max(dense["peak_extra_mb"], 1e-9),
                "time_ratio": fused["seconds"] / dense["seconds"],
                "loss_rel_diff": abs(fused["loss"] - dense["loss"]) / abs(dense["loss"]),
            }
        rows.append(row)
        print(format_row(row), flush=True)
    report = {
        "command": "python bench/losses.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {_cores()} cores, CPU float32",
        "chunk_size": args.chunk,
        "loss": "generalized JSD, beta 0.5, mean over tokens; forward + backward",
        "rows": rows,
    }
    write(report, args.out or RESULTS)


def lora_section(chunk: int, repeat: int, out: Path) -> None:
    """The frozen-head rows: what a LoRA student's online-KD step costs in the loss."""
    rows = []
    for vocab, tokens, hidden in LORA_GRID:
        row = {"vocab": vocab, "tokens": tokens, "hidden": hidden}
        for method in LORA_METHODS:
            row[method] = run_cell(method, vocab, tokens, hidden, chunk, repeat)
        trainable, frozen = row["fused"], row["fused_frozen_head"]
        if "error" not in trainable and "error" not in frozen:
            row["frozen_vs_trainable_head"] = {
                "memory_ratio": frozen["peak_extra_mb"] / max(trainable["peak_extra_mb"], 1e-9),
                "time_ratio": frozen["seconds"] / trainable["seconds"],
                "cpu_time_ratio": frozen["cpu_seconds"] / trainable["cpu_seconds"],
            }
        rows.append(row)
        print(format_row(row, LORA_METHODS), flush=True)
    report = {
        "command": "python bench/losses.py --lora",
        "repeat": repeat,
        "machine": f"{platform.machine()}, {_cores()} cores, CPU float32",
        "chunk_size": chunk,
        "loss": "generalized JSD, beta 0.5, mean over tokens; forward + backward",
        "rows": rows,
    }
    write(report, out)


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def format_row(row: dict, methods: tuple[str, ...] = METHODS) -> str:
    def cell(result: dict) -> str:
        if "error" in result:
            return f"{result['error'][:40]:>28}"
        return f"{result['peak_extra_mb']:8.0f} MB {result['seconds']:7.2f} s {result['loss']:.5f}"

    head = f"V={row['vocab']:>6} T={row['tokens']:>4} H={row['hidden']:>4}"
    return head + " | " + " | ".join(f"{m}: {cell(row[m])}" for m in methods)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
