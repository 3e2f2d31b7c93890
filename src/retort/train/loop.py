"""``retort distill``: one readable training loop on accelerate.

Per optimizer step: gather the step's micro-batches, count the global target tokens, then for
each micro-batch run the student (and the teacher under no_grad when the objective needs it),
sum the loss terms over tokens, divide by the global count and backward; clip, step, schedule,
log, checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from retort.config import DistillConfig, load_yaml, save_yaml
from retort.errors import ConfigError
from retort.models.loading import save_model_folder
from retort.models.pruning import PRUNED_FILE
from retort.progress import Progress, Silent
from retort.train import checkpoint, retention, sharding
from retort.train.batches import StepBatches
from retort.train.data import examples_from_rows
from retort.train.heldout import HeldOutEval
from retort.train.metrics import MetricsSink
from retort.train.objectives import ForwardPlan, KDRescaler
from retort.train.schedule import BudgetSchedule
from retort.train.setup import assemble
from retort.train.step import SUMS, TERMS, StepRunner

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from retort.teachers.local import LocalTeacher

log = logging.getLogger(__name__)
# Keys that may change between a run and its resumption without changing what is optimized.
RESUMABLE_CHANGES = {"save_every", "log_every", "max_steps", "eval_data", "eval_every", "eval_rows"}
# What a run leaves before its first checkpoint; such a folder may simply start again.
RESTARTABLE = {"config.yaml", "metrics.jsonl", "checkpoints", PRUNED_FILE}


@dataclass
class DistillResult:
    """Where a run wrote its outputs and how it ended."""

    run_dir: Path
    final_dir: Path
    steps: int
    last_loss: float
    seconds: float
    resumed_at: int = 0  # the checkpoint's step (0: a fresh run); == steps: nothing to train


def distill(
    config: DistillConfig,
    *,
    resume: bool = False,
    teacher: LocalTeacher | None = None,
    student: PreTrainedModel | None = None,
    progress: Progress | None = None,
) -> DistillResult:
    """Train ``config.student`` on ``config.data``; writes ``config.out`` (see DistillConfig)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, convert_outputs_to_fp32, gather_object, set_seed

    progress = progress or Silent()
    run_dir = Path(config.out)
    _check_run_dir(run_dir, config, resume)
    if "teacher" in config.fsdp and config.live_top_k:
        raise ConfigError(
            "--fsdp teacher: the live cross-tokenizer teacher (--live-top-k) is not sharded "
            "yet; drop 'teacher' from --fsdp (or shard the student alone)"
        )
    if config.fsdp and _launched_processes() == 1:
        raise ConfigError(
            f"--fsdp {','.join(config.fsdp)}: one process has nothing to shard over; start "
            "several (accelerate launch --multi_gpu --num_processes N -m retort distill ...) "
            "or drop --fsdp"
        )
    if "teacher" in config.fsdp and not ForwardPlan.of(config).needs_teacher:
        raise ConfigError(
            f"--fsdp teacher: objective {config.objective} runs no live teacher in training; "
            "drop 'teacher' from --fsdp"
        )
    parts = assemble(config, teacher, student)  # every input error surfaces before any write
    heldout = HeldOutEval.open(config, parts)
    examples = examples_from_rows(parts.rows, config.max_seq_len, keep_rows=parts.live is not None)
    if not examples:
        raise ConfigError(
            f"max_seq_len {config.max_seq_len}: every prompt in {config.data} is longer; "
            "raise max_seq_len"
        )
    data_identity = _data_identity(parts.rows)
    plan = parts.plan

    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=_cpu_processes())
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # retort shards through --fsdp (the same FSDP2, also on CPU processes), so that its
        # checkpoints know the state is sharded; accelerate's own FSDP/DeepSpeed configs would
        # hand it a model whose checkpoints it writes from one shard.
        raise ConfigError(
            f"{accelerator.distributed_type.value} from the accelerate config: shard with "
            "`retort distill --fsdp student,teacher` under accelerate launch --multi_gpu "
            "instead (docs/scale.md)"
        )
    set_seed(config.seed)
    model = parts.student
    model.config.use_cache = False
    mesh = sharding.device_mesh(accelerator) if config.fsdp else None
    if "student" in config.fsdp:
        if parts.projector is not None and any(True for _ in parts.projector.parameters()):
            raise ConfigError(
                "--fsdp student: the hidden-state projection (student and teacher widths "
                "differ) is not sharded with the student yet; use DDP, or --fsdp teacher alone"
            )
        model = sharding.shard(model, mesh, "student")  # before the optimizer sees its weights
        if accelerator.native_amp:  # what prepare() does to the forward, which it skips here
            model.forward = convert_outputs_to_fp32(accelerator.autocast()(model.forward))
    trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
    if parts.projector is not None:
        trainable += list(parts.projector.parameters())
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = BudgetSchedule(config)
    scheduler = schedule.scheduler(optimizer)
    # The scheduler stays out of prepare(): accelerate would step it once per process per step.
    if sharding.is_sharded(model):
        optimizer = accelerator.prepare(optimizer)  # the model is sharded, not DDP-wrapped
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    projector = parts.projector
    if projector is not None:
        has_weights = any(True for _ in projector.parameters())
        projector = accelerator.prepare(projector) if has_weights else projector
    teacher_model = None
    teacher_device = torch.device(config.teacher_device or accelerator.device)
    if plan.needs_teacher:
        # Inference only: never prepared (no DDP wrapper, no optimizer state), no grads;
        # with --fsdp teacher, sharded like the student, its layers gathered one at a time.
        teacher_model = parts.teacher.model
        if "teacher" in config.fsdp:
            teacher_model = sharding.shard(teacher_model, mesh, "teacher")
        teacher_model = teacher_model.to(teacher_device).eval()
        teacher_model.requires_grad_(False)
    if parts.live is not None:  # cross_tokenizer: scores each batch in its own tokens
        parts.live.place(teacher_device)
    if heldout is not None and heldout.teacher is not None:
        # a teacher loaded only to prune the student still scores top-1 and KL, placed once
        heldout.teacher = teacher_model or parts.teacher.model.to(teacher_device).eval()
    heads = None  # fused path: logits are rebuilt from hidden states and the output layers
    if not plan.student_logits and not config.fsdp:  # sharded: StepRunner reads them whole
        heads = (
            accelerator.unwrap_model(model).get_output_embeddings().weight,
            teacher_model.get_output_embeddings().weight.to(accelerator.device),
        )
    rescaler = KDRescaler()

    step = 0
    checkpoints = checkpoint.list_checkpoints(run_dir)
    if resume and checkpoints:
        info, extra = checkpoint.load(
            checkpoints[-1],
            accelerator.unwrap_model(model),
            optimizer,
            scheduler,
            rank=accelerator.process_index,  # each process resumes its own random streams
        )
        if info.get("data") != data_identity:
            raise ConfigError(
                f"{checkpoints[-1]}: the store's rows changed since this checkpoint "
                f"({info.get('data')} → {data_identity}); resume needs the same data"
            )
        step = info["step"]
        schedule.load_state_dict(info.get("schedule", {}))
        if projector is not None:
            accelerator.unwrap_model(projector).load_state_dict(extra["projector"])
        rescaler.load_state_dict(extra.get("kd_rescaler", {}))
    else:  # a new run, or one stopped before its first checkpoint: start at step 0
        run_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        # The main process alone writes metrics.jsonl: two processes truncating it at once
        # could each read the other's half-written file and lose the kept lines.
        if step:
            _truncate_metrics(run_dir / "metrics.jsonl", step)
        else:
            (run_dir / "metrics.jsonl").write_text("")
        save_yaml(config, run_dir / "config.yaml")
        if parts.pruned is not None:  # what the student kept: resume and merge rebuild it
            partial = run_dir / f"{PRUNED_FILE}.partial"
            partial.write_text(json.dumps(parts.pruned) + "\n")
            partial.replace(run_dir / PRUNED_FILE)

    def save() -> None:
        extra = {"kd_rescaler": rescaler.state_dict()}
        if projector is not None:
            extra["projector"] = accelerator.unwrap_model(projector).state_dict()
        info = {
            "store": str(parts.store.path),
            "store_fingerprint": parts.store.fingerprint,
            "data": data_identity,
            "schedule": schedule.state_dict(),
        }
        # Every process's generators, in rank order: the main process writes them all.
        rng_states = gather_object([checkpoint.rng_state()])
        sharded = sharding.is_sharded(model)
        if sharded:  # every process writes its shard of weights and optimizer state first
            if accelerator.is_main_process:
                checkpoint.fresh_partial(run_dir, step)
            accelerator.wait_for_everyone()
            folder = checkpoint.partial_folder(run_dir, step) / sharding.SHARDED_STATE
            sharding.save_state(model, optimizer, folder)
            accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            checkpoint.save(
                run_dir,
                step,
                unwrapped,
                optimizer,
                scheduler,
                info,
                extra,
                keep=max(config.keep_checkpoints, 1),  # the newest stays until final/ exists
                rng_states=rng_states,
                sharded=sharded,
            )
        accelerator.wait_for_everyone()

    world = accelerator.num_processes
    batches = StepBatches(config, examples, parts, accelerator.process_index, world)
    forward_backward = StepRunner(
        config, parts, plan, accelerator, model, teacher_model, teacher_device, heads, projector
    )
    sink = MetricsSink(run_dir, config, accelerator)

    shown: dict[str, float] = {}  # beside the progress bar: the latest held-out NLL

    def evaluate_heldout() -> None:
        # The main process scores the plain module (no DDP forward, whose buffer broadcast
        # would wait for the others); the others wait for it at the barrier. Sharded models
        # gather their layers collectively: then every process scores, the main one writes.
        if accelerator.is_main_process or config.fsdp:
            record = heldout(accelerator.unwrap_model(model), step, schedule.tokens)
            sharding.release(heldout.teacher)
        if accelerator.is_main_process:
            sink.write(record, split="eval")
            shown["eval_nll"] = record["nll"]
        accelerator.wait_for_everyone()

    started = time.perf_counter()
    resumed_at = step
    last_loss = float("nan")
    model.train()
    if config.max_tokens:
        progress.start("distill", total=config.max_tokens, unit="tokens")
    else:
        progress.start("distill", total=config.max_steps - step, unit="steps")
    stop = StepBoundaryInterrupt()
    try:
        if heldout is not None and step == 0:
            evaluate_heldout()  # the starting point of the held-out curves
        while not schedule.finished(step):
            stop.check(accelerator)  # a Ctrl-C in the last step lands here, the step whole
            tick = time.perf_counter()
            micro_batches = batches.of_step(step, accelerator.unwrap_model(model))
            kd_scale = rescaler.scale if config.kd_rescale else 1.0
            sums, present, global_tokens = forward_backward(micro_batches, kd_scale)
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            totals = _sum_over_processes(accelerator, sums)
            # Everything a checkpoint holds moves on together: a second Ctrl-C in here waits
            # for the step boundary, so no checkpoint pairs step N with step N + 1's weights.
            with stop.deferred():
                optimizer.step()
                schedule.tokens += int(global_tokens)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                record = _step_record(step, totals, present, int(global_tokens))
                if step == 1:  # what this process holds, once the optimizer state exists
                    record |= sharding.held_mib(model, optimizer, teacher_model)
                if config.kd_rescale and "ce" in record and "kd" in record:
                    rescaler.update(record["ce"], record["kd"])

            last_loss = record["loss"]
            record["lr"] = scheduler.get_last_lr()[0]
            record["tokens"] = int(global_tokens)
            record["tokens_seen"] = schedule.tokens
            seconds = time.perf_counter() - tick
            record["step_seconds"] = seconds
            record["tokens_per_s"] = int(global_tokens) / seconds
            if config.kd_rescale:
                record["kd_scale"] = kd_scale
            if step % config.log_every == 0 or step == 1:  # step 1: the memory held
                sink.write(record)
            advance = int(global_tokens) if config.max_tokens else 1
            progress.advance(advance, loss=last_loss, **shown)
            if heldout is not None and (step % config.eval_every == 0 or schedule.finished(step)):
                evaluate_heldout()
            if step % config.save_every == 0 or schedule.finished(step):
                save()
    except KeyboardInterrupt:
        # Keep what is done: a checkpoint of the last finished step, for --resume.
        if step and not (run_dir / "checkpoints" / f"step-{step:06d}").exists():
            save()
        raise
    finally:
        stop.restore()
        progress.finish()
        sink.close()

    final_dir = run_dir / "final"
    whole = accelerator.unwrap_model(model)
    if sharding.is_sharded(model):
        whole = sharding.gathered_copy(model)  # collective; the main process gets the model
    if accelerator.is_main_process:
        save_model_folder(whole, parts.tokenizer, final_dir)
        retention.prune_checkpoints(run_dir, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - started
    return DistillResult(run_dir, final_dir, step, last_loss, seconds, resumed_at)


def _sum_over_processes(accelerator: Any, sums: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return sums
    values = torch.tensor([sums[k] for k in SUMS], dtype=torch.float64, device=accelerator.device)
    reduced = accelerator.reduce(values, "sum").tolist()
    return dict(zip(SUMS, reduced, strict=True))


def _step_record(
    step: int, totals: dict[str, float], present: set[str], tokens: int
) -> dict[str, Any]:
    """Per-token means over the whole step (every micro-batch, every process)."""
    record: dict[str, Any] = {"step": step, "loss": totals["loss"] / tokens}
    for name in TERMS:
        if name in present:
            record[name] = totals[name] / tokens
    if totals["positions"]:  # the share of the step's compute spent on padding
        record["padding"] = 1 - totals["sequence_tokens"] / totals["positions"]
    if totals["samples"]:
        record["sample_length"] = totals["sample_tokens"] / totals["samples"]
        record["teacher_logprob"] = totals["teacher_logprob"] / max(totals["sample_tokens"], 1)
        record["sampled_fraction"] = totals["sample_tokens"] / tokens
    return record


def _launched_processes() -> int:
    """How many processes the launcher (torchrun, accelerate launch) started."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _cpu_processes() -> bool:
    """Several processes on a machine without CUDA (torchrun, or `accelerate launch
    --multi_gpu`): accelerate only forms a gloo group when told the processes are CPU ones."""
    return _launched_processes() > 1 and not torch.cuda.is_available()


def leave_process_group() -> None:
    """Ends a launch's process group once every process is done. Called by whoever started
    the run (the CLI, a driver script), not by ``distill``, which one process may call several
    times: a gloo group left for interpreter exit can abort a rank ("terminate called without
    an active exception") after all its work is written, failing the whole launch."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class StepBoundaryInterrupt:
    """Defers Ctrl-C to the next step boundary, so no checkpoint holds a half-applied update;
    a second Ctrl-C interrupts at once, except inside ``deferred()``: there it waits for the
    boundary too."""

    def __init__(self) -> None:
        self.requested = False
        self.holding = False  # inside deferred()
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and not self.holding:
            raise KeyboardInterrupt
        self.requested = True  # check() raises at the boundary

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block no Ctrl-C can split. Stopping at the boundary rather than the block's end
        also keeps every process at the same step (check() agrees on it)."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False

    def check(self, accelerator: Any = None) -> None:
        """Raise at this boundary if Ctrl-C was pressed; with several processes, all of them
        stop at the same step when any one was interrupted (so all reach the same save)."""
        requested = self.requested
        if accelerator is not None and accelerator.num_processes > 1:
            flag = torch.tensor(int(requested), device=accelerator.device)
            requested = bool(accelerator.reduce(flag, "sum") > 0)
        if requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _data_identity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Row count and a hash of the ids: batches are a function of both."""
    digest = hashlib.sha256("\n".join(sorted(r["id"] for r in rows)).encode()).hexdigest()
    return {"rows": len(rows), "ids_sha256": digest[:16]}


def _check_run_dir(run_dir: Path, config: DistillConfig, resume: bool) -> None:
    saved = run_dir / "config.yaml"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: --out is a file; give a folder")
    started = checkpoint.list_checkpoints(run_dir) or (run_dir / "final").exists()
    if not resume:
        if started:
            raise ConfigError(
                f"{run_dir}: run folder exists; pass --resume to continue it, or another --out"
            )
        if run_dir.exists() and any(p.name not in RESTARTABLE for p in run_dir.iterdir()):
            raise ConfigError(f"{run_dir}: folder exists and is not a run; choose another --out")
        return
    if not saved.is_file() or not checkpoint.list_checkpoints(run_dir):
        return  # stopped before its first checkpoint: it starts again from step 0
    before = load_yaml(saved)
    now = config.model_dump(mode="json")
    # A key the saved config.yaml lacks (a run started by an older retort) had its default.
    defaults = {k: _json_default(type(config), k) for k in now if k not in before}
    before = {**defaults, **before}
    changed = [k for k in now if before.get(k) != now[k] and k not in RESUMABLE_CHANGES]
    if changed:
        detail = ", ".join(f"{k} {before.get(k)} → {now[k]}" for k in changed)
        raise ConfigError(
            f"{saved}: --resume with different settings ({detail}); resume with the saved ones"
        )


def _json_default(model: type[DistillConfig], key: str) -> Any:
    from pydantic import TypeAdapter

    field = model.model_fields[key]
    return TypeAdapter(field.annotation).dump_python(
        field.get_default(call_default_factory=True), mode="json"
    )


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the resumed checkpoint: those steps will be run again."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    path.write_text("".join(line + "\n" for line in lines))
