"""TRL's rows of bench/train.py: the same student, batches and schedule under TRL's trainers.

TRL (>= 1.16, in the bench environment only: `pip install trl`) trains the student that
retort's row of the objective would build (retort's own `assemble`, so the same pruned weights)
on the same examples in the same order (retort's batch order of seed 0, fed sequentially):

  sft        SFTTrainer on the store's prompt + completion ids, loss on the completion
  online     GKDTrainer, lmbda=0 (never samples), beta=0 (forward KL), temperature 1
  on_policy  DistillationTrainer, beta=1 (reverse KL) on 48 sampled tokens per prompt

Equal settings: fp32 (TRL's configs default to bf16 autocast), batch 8, AdamW at 3e-4 with 2
warm-up steps then cosine decay, gradient clipping at 1.0, no gradient checkpointing (TRL's
configs default to it; retort does not checkpoint, and it trades speed for memory). The loss
definitions agree: per-token means over the completion tokens of the batch (sft and online
losses match retort's step by step).
"""

from __future__ import annotations

import time
from typing import Any

import torch


class StepClock:
    """A transformers callback: each step's seconds and its logged loss and completion length."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                clock.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.seconds.append(time.perf_counter() - clock.started)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    clock.losses.append(float(logs["loss"]))
                    clock.lengths.append(logs.get("completions/mean_length"))

        self.callback = Callback()
        self.started = 0.0
        self.seconds: list[float] = []
        self.losses: list[float] = []
        self.lengths: list[float | None] = []


def run_trl(objective: str, config: Any, warmup: int, steps: int) -> dict[str, Any]:
    """One TRL row: ``config`` is the DistillConfig of retort's row of ``objective``."""
    from datasets import Dataset

    from retort.train.data import examples_from_rows, micro_batch_indices
    from retort.train.setup import assemble

    parts = assemble(config)
    examples = examples_from_rows(parts.rows, config.max_seq_len)
    total = warmup + steps
    order = []
    for step in range(total):
        for i in micro_batch_indices(len(examples), step, 0, config.batch_size, 1, config.seed):
            order.append((examples[i], parts.rows[i]))
    clock = StepClock()
    settings = {
        "output_dir": str(config.out),
        "max_steps": total,
        "per_device_train_batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": config.warmup_steps,
        "max_grad_norm": config.max_grad_norm,
        "weight_decay": 0.0,
        "gradient_checkpointing": False,
        "bf16": False,  # TRL's configs default to bf16 autocast; retort's rows are fp32
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "train_sampling_strategy": "sequential",
        "use_cpu": not torch.cuda.is_available(),
        "seed": config.seed,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    student, tokenizer = parts.student, parts.tokenizer
    if objective == "on_policy":
        trainer = _on_policy(student, parts.teacher.model, tokenizer, order, settings, Dataset)
    else:
        trainer = _teacher_forced(objective, student, parts, order, settings, Dataset)
    trainer.add_callback(clock.callback)
    trainer.train()
    timed = slice(warmup, total)
    seconds = sum(clock.seconds[timed])
    if objective == "on_policy":  # target tokens: the sampled completions, from TRL's log
        tokens = sum(length * config.batch_size for length in clock.lengths[timed])
        padding = None
    else:
        batches = [order[s * config.batch_size : (s + 1) * config.batch_size] for s in range(total)]
        tokens = sum(_targets(b) for b in batches[timed])
        padding = _padding(batches[timed])
    losses = clock.losses[timed]
    return {
        "objective": objective,
        "layout": "trl",
        "tokens_per_s": tokens / seconds,
        "seconds_per_step": seconds / steps,
        "padding": padding,
        "mean_loss": sum(losses) / len(losses),
        "losses": clock.losses,
    }


def _teacher_forced(objective, student, parts, order, settings, dataset_class):
    rows = {
        "input_ids": [e.input_ids for e, _ in order],
        "labels": [e.labels for e, _ in order],
    }
    dataset = dataset_class.from_dict(rows)
    if objective == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**settings, max_length=None, dataset_num_proc=None)
        return SFTTrainer(
            model=student, args=args, train_dataset=dataset, processing_class=parts.tokenizer
        )
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    args = GKDConfig(**settings, lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False)
    return GKDTrainer(
        model=student,
        teacher_model=parts.teacher.model,
        args=args,
        train_dataset=dataset,
        processing_class=parts.tokenizer,
        data_collator=PaddedRows(parts.tokenizer.pad_token_id),
    )


class PaddedRows:
    """GKDTrainer's batch from pre-tokenized rows: right-padded ids and labels; ``prompts``
    only matter when it samples, which it never does at lmbda 0."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id)
        labels = torch.full((len(features), width), -100)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"])
            labels[row, :n] = torch.tensor(f["labels"])
            mask[row, :n] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "prompts": ids,
            "prompt_attention_mask": mask,
        }


def _on_policy(student, teacher, tokenizer, order, settings, dataset_class):
    from trl import DistillationConfig, DistillationTrainer

    prompts = []
    for example, row in order:
        messages = [{"role": "user", "content": row["prompt"]}]
        if row.get("system"):
            messages.insert(0, {"role": "system", "content": row["system"]})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # a BatchEncoding in 5.x
        if list(ids) != example.input_ids[: example.prompt_length]:
            raise SystemExit(f"{row['id']}: TRL's prompt tokens differ from the store's")
        prompts.append(messages)
    args = DistillationConfig(
        **settings,
        beta=1.0,
        max_completion_length=48,
        temperature=1.0,
        shuffle_dataset=False,
    )
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=dataset_class.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
    )


def _targets(batch) -> int:
    return sum(sum(1 for label in e.labels if label != -100) for e, _ in batch)


def _padding(batches) -> float:
    """The share of computed positions that were padding (each batch padded to its longest)."""
    real = sum(len(e.input_ids) for b in batches for e, _ in b)
    computed = sum(len(b) * max(len(e.input_ids) for e, _ in b) for b in batches)
    return 1 - real / computed
