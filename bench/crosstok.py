"""Benchmark: a teacher of another tokenizer — Gemma 3 270M (262,144 tokens, SentencePiece
style) — distilled into SmolLM2-135M-Instruct (49,152 tokens, byte-level BPE), at equal
student tokens:

  sft              cross-entropy on the teacher's text in the student's tokens
                   (cross_tokenizer with kd_weight 0: the same rows, no teacher distribution)
  cross_tokenizer  + the teacher's top-20, aligned by bytes (one-to-one tokens through the
                   student's vocabulary, other groups by ULD), ce_weight 0.5
  cross_tokenizer_live  the same, the live teacher scoring each batch (--live-top-k 64)

Metric that works across tokenizers: bits per byte of the teacher's held-out completions
under the student (NLL in nats over the student's tokens of the text / (ln 2 · bytes)); the
teacher's own bits per byte of them (from its stored logprobs of its tokens) is the floor.
Held-out prompts are the quickstart's held-out split, never trained on. Each student also
answers them (greedy, --answer-tokens): graded against the prompts' references (contains
match, as `retort eval`), and scored by the teacher — its NLL of the student's answer text
(re-tokenized in the teacher's tokens after its own prompt), in bits per byte, so how much the
teacher likes what the student wrote, comparable across tokenizers. The teacher's own answers
are the row to beat.

    .venv/bin/python bench/crosstok.py [--train-prompts 128] [--steps 40]

Resumable: stores and runs in --work are reused. Writes --out (JSON). Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from retort.capture.runner import generate
from retort.capture.store import Store
from retort.config import DistillConfig, GenerateConfig
from retort.crosstok.token_store import token_rows_as_text
from retort.evaluate.answers import contains_match
from retort.models.embedded import GEMMA3, SMOLLM2
from retort.models.loading import load_model, load_tokenizer, resolve
from retort.quickstart.pipeline import Budget, split_prompts
from retort.teachers.chat import end_of_turn_id
from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Sampling
from retort.train.loop import distill
from retort.train.text_store import rows_in_student_tokens

RESULTS = Path(__file__).parent / "results" / "crosstok.json"
ROWS = {
    "sft": {"ce_weight": 1.0, "kd_weight": 0.0},
    "cross_tokenizer": {"ce_weight": 0.5, "kd_weight": 1.0},
    "cross_tokenizer_live": {"ce_weight": 0.5, "kd_weight": 1.0, "live_top_k": 64},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-prompts", type=int, default=128)
    parser.add_argument("--heldout-prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--answer-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--work", type=Path, default=Path("bench/work/crosstok"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    args.work.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.train_prompts, args.heldout_prompts, args.new_tokens, args.steps)
    train_prompts, heldout_prompts = split_prompts(budget, args.work)
    stores = {}
    for name, prompts in (("train", train_prompts), ("heldout", heldout_prompts)):
        stores[name] = args.work / f"store-{name}"
        started = time.perf_counter()
        generate(
            GenerateConfig(
                teacher=GEMMA3.alias,
                prompts=prompts,
                out=stores[name],
                top_k=20,
                max_new_tokens=args.new_tokens,
            )
        )
        print(f"captured {name} in {time.perf_counter() - started:.0f} s", flush=True)
    student_tokenizer = load_tokenizer(resolve(SMOLLM2.alias))
    heldout = heldout_rows(stores["heldout"], student_tokenizer)
    results: dict[str, Any] = {
        "teacher": GEMMA3.alias,
        "student": SMOLLM2.alias,
        "settings": vars(args) | {"work": str(args.work), "out": str(args.out)},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "teacher_bits_per_byte": teacher_bits_per_byte(stores["heldout"]),
        "rows": {},
    }
    teacher = LocalTeacher.load(GEMMA3.alias)
    judge = AnswerQuality(teacher, stores["heldout"], heldout, student_tokenizer, args)
    results["rows"]["teacher"] = judge.of_teacher()
    print("teacher", results["rows"]["teacher"], flush=True)
    before = load_model(resolve(SMOLLM2.alias)).eval()
    results["rows"]["untrained"] = {
        "bits_per_byte": bits_per_byte(before, heldout),
        **judge.of_student(before),
    }
    print("untrained", results["rows"]["untrained"], flush=True)
    for row, weights in ROWS.items():
        config = DistillConfig(
            data=stores["train"],
            out=args.work / f"run-{row}",
            student=SMOLLM2.alias,
            teacher=GEMMA3.alias,
            objective="cross_tokenizer",
            max_steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=max(1, args.steps // 10),
            save_every=args.steps,
            keep_checkpoints=0,
            **weights,
        )
        started = time.perf_counter()
        if not (config.out / "final" / "config.json").is_file():
            distill(config)
        trained = load_model(resolve(str(config.out / "final"))).eval()
        tokens = sum(
            json.loads(line).get("tokens", 0) for line in (config.out / "metrics.jsonl").open()
        )
        results["rows"][row] = {
            "bits_per_byte": bits_per_byte(trained, heldout),
            **judge.of_student(trained),
            "train_seconds": round(time.perf_counter() - started, 1),
            "student_target_tokens": tokens,
            **weights,
        }
        print(row, results["rows"][row], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def heldout_rows(store: Path, tokenizer: Any) -> list[dict[str, Any]]:
    """The held-out rows in the student's tokens, without the end-of-turn token (it spells no
    byte of the text)."""
    opened = Store.open(store)
    teacher_tokenizer = load_tokenizer(resolve(GEMMA3.alias))
    rows = token_rows_as_text(opened.read_table().to_pylist(), teacher_tokenizer)
    rows = rows_in_student_tokens(rows, tokenizer, store)
    end = end_of_turn_id(tokenizer)
    for row in rows:
        ids = row["completion_token_ids"]
        if ids and ids[-1] == end:
            row["completion_token_ids"] = ids[:-1]
    return [r for r in rows if r["completion_token_ids"]]


class AnswerQuality:
    """Greedy answers to the held-out prompts, graded against references and scored by the
    teacher in its own tokens (bits per byte of the answer text)."""

    def __init__(
        self, teacher: LocalTeacher, store: Path, rows: list[dict], tokenizer: Any, args: Any
    ) -> None:
        self.teacher, self.rows, self.tokenizer = teacher, rows, tokenizer
        self.sampling = Sampling(max_new_tokens=args.answer_tokens)
        stored = Store.open(store).read_table().to_pylist()
        self.teacher_prompts = {r["id"]: list(r["prompt_token_ids"]) for r in stored}

    def of_teacher(self) -> dict[str, Any]:
        return self._graded(self._answers(self.teacher.model, self.teacher.tokenizer, "teacher"))

    def of_student(self, model: Any) -> dict[str, Any]:
        return self._graded(self._answers(model, self.tokenizer, "student"))

    def _answers(self, model: Any, tokenizer: Any, side: str) -> list[str]:
        runner = LocalTeacher(model, tokenizer)
        answers = []
        for start in range(0, len(self.rows), 8):
            chunk = self.rows[start : start + 8]
            prompts = [
                self.teacher_prompts[r["id"]] if side == "teacher" else list(r["prompt_token_ids"])
                for r in chunk
            ]
            for out in runner.generate(prompts, self.sampling, top_k=0):
                answers.append(tokenizer.decode(out.completion_ids, skip_special_tokens=True))
        return answers

    def _graded(self, answers: list[str]) -> dict[str, Any]:
        pairs = zip(answers, self.rows, strict=True)
        graded = [(a, r["reference"]) for a, r in pairs if r.get("reference")]
        nats, size = 0.0, 0
        tokenizer = self.teacher.tokenizer
        for answer, row in zip(answers, self.rows, strict=True):
            if not answer.strip():
                continue
            prompt = self.teacher_prompts[row["id"]]
            written = tokenizer.encode(answer, add_special_tokens=False)
            (scored,) = self.teacher.token_logprobs([prompt + written])
            nats -= sum(scored[len(prompt) - 1 :])
            size += len(answer.encode("utf-8"))
        return {
            "contains_match": sum(contains_match(a, r) for a, r in graded) / max(len(graded), 1),
            "reference_count": len(graded),
            "teacher_bits_per_byte_of_answers": nats / (math.log(2) * max(size, 1)),
            "answer_bytes": size / len(answers),
        }


@torch.no_grad()
def bits_per_byte(model: Any, rows: list[dict[str, Any]]) -> float:
    nats, size = 0.0, 0
    for row in rows:
        prompt, completion = row["prompt_token_ids"], row["completion_token_ids"]
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
        nats += float(F.cross_entropy(logits.float(), torch.tensor(completion), reduction="sum"))
        size += len(row["completion"].encode("utf-8"))
    return nats / (math.log(2) * max(size, 1))


def teacher_bits_per_byte(store: Path) -> float:
    """The teacher's own NLL of its completions, per byte (its chosen tokens' logprobs)."""
    teacher_tokenizer = load_tokenizer(resolve(GEMMA3.alias))
    rows = token_rows_as_text(Store.open(store).read_table().to_pylist(), teacher_tokenizer)
    nats = -sum(sum(r["token_logprobs"]) for r in rows)
    size = sum(len(r["completion"].encode("utf-8")) for r in rows)
    return nats / (math.log(2) * max(size, 1))


if __name__ == "__main__":
    main()
