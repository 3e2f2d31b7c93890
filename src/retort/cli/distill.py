"""``retort distill``: train a student on a store (and a live teacher for online KD)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from retort.cli.console import RichProgress, err
from retort.config import DistillConfig


def _shown(key: str) -> str:
    """The recipe default of ``key``, shown in --help (the flags default to None so that a
    --config recipe is not overridden by flags the user did not give)."""
    if key == "kind":
        return "forward_kl; on_policy: reverse_kl"
    if key == "ce_weight":
        return "1 for sft, else 0"
    value = DistillConfig.model_fields[key].default
    return str(value).lower() if isinstance(value, bool) else str(value)


def register(app: typer.Typer) -> None:
    app.command("distill", no_args_is_help=True)(distill)


def distill(
    data: Annotated[Path | None, typer.Option(help="Store written by `retort generate`.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder to write.")] = None,
    student: Annotated[
        str | None,
        typer.Option(
            help="A model spec, or a prune of the teacher: prune:N (N evenly spaced layers), "
            "prune:N:importance (the N with most Block Influence on store rows), with "
            ":mlp=M and :heads=H to prune width (docs/distill.md)."
        ),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="Teacher model spec, or an http(s)://…/v1 server (on_policy)."),
    ] = None,
    teacher_model: Annotated[
        str | None, typer.Option(help="HTTP teacher: the model name on the server.")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="HTTP teacher: its tokenizer (default: --teacher-model).")
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            show_default=_shown("objective"),
            help="sft | topk | online | on_policy | cross_tokenizer (a text store, captured "
            "without a tokenizer: sft, or cross_tokenizer on its top-k, with any student).",
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            show_default=_shown("kind"),
            help="KD divergence: forward_kl | reverse_kl | jsd | skew_forward_kl | "
            "skew_reverse_kl | tvd",
        ),
    ] = None,
    lmbda: Annotated[
        float | None,
        typer.Option(
            show_default=_shown("lmbda"),
            help="on_policy: share of batches the student samples (GKD's λ; default 1).",
        ),
    ] = None,
    beta: Annotated[
        float | None,
        typer.Option(show_default=_shown("beta"), help="jsd mixture weight, in (0, 1)."),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(show_default=_shown("alpha"), help="Skew weight of the skew KLs."),
    ] = None,
    hidden_weight: Annotated[
        float | None,
        typer.Option(
            show_default=_shown("hidden_weight"),
            help="Weight of the hidden-state loss (needs --teacher).",
        ),
    ] = None,
    kd_rescale: Annotated[
        bool | None,
        typer.Option(
            show_default=_shown("kd_rescale"), help="Scale KD to the running magnitude of CE."
        ),
    ] = None,
    pack: Annotated[
        bool | None,
        typer.Option(
            "--pack/--no-pack",
            show_default=_shown("pack"),
            help="Pack each micro-batch's examples into shared rows: no compute on padding.",
        ),
    ] = None,
    lora: Annotated[
        str | None,
        typer.Option(help="Train a LoRA adapter: `r=16,alpha=32,targets=q_proj,v_proj`."),
    ] = None,
    fsdp: Annotated[
        str | None,
        typer.Option(
            help="Shard `student`, `teacher` or `student,teacher` over the processes of "
            "`accelerate launch --multi_gpu` with FSDP2 (docs/scale.md)."
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(show_default=_shown("max_steps"), help="Optimizer steps.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Token budget: stop after this many target tokens.")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(show_default=_shown("batch_size"), help="Sequences per micro-batch."),
    ] = None,
    grad_accum: Annotated[
        int | None, typer.Option(show_default=_shown("grad_accum"), help="Micro-batches per step.")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(show_default=_shown("learning_rate"), help="Peak learning rate.")
    ] = None,
    ce_weight: Annotated[
        float | None,
        typer.Option(show_default=_shown("ce_weight"), help="Weight of CE on teacher tokens."),
    ] = None,
    kd_weight: Annotated[
        float | None, typer.Option(show_default=_shown("kd_weight"), help="Weight of the KD term.")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(show_default=_shown("temperature"), help="KD softmax temperature."),
    ] = None,
    uld_weight: Annotated[
        float | None,
        typer.Option(
            show_default=_shown("uld_weight"),
            help="cross_tokenizer: weight of ULD on tokens that do not match one to one.",
        ),
    ] = None,
    live_top_k: Annotated[
        int | None,
        typer.Option(
            show_default=_shown("live_top_k"),
            help="cross_tokenizer: the local --teacher (any tokenizer) scores each batch; "
            "distill its top-K per position instead of the store's (0: the store's).",
        ),
    ] = None,
    save_every: Annotated[
        int | None,
        typer.Option(show_default=_shown("save_every"), help="Checkpoint every N steps."),
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            help="Held-out store scored during training: NLL, and top-1 and KL when the run "
            "loads a teacher; into metrics.jsonl (split: eval) and TensorBoard."
        ),
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(show_default=_shown("eval_every"), help="Steps between held-out scores."),
    ] = None,
    keep_checkpoints: Annotated[
        int | None,
        typer.Option(
            show_default=_shown("keep_checkpoints"),
            help="Newest checkpoints kept on disk (older ones are deleted); 0 deletes them once "
            "final/ is written.",
        ),
    ] = None,
    allow_other_teacher: Annotated[
        bool | None,
        typer.Option(
            "--allow-other-teacher",
            help="Use a store that another teacher wrote (refused by default for topk, online "
            "and on_policy).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML recipe; flags and --set override it.")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE override (repeatable).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in --out from its last checkpoint; with --out alone, its "
            "saved config.yaml supplies every setting."
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(help="Print the plan (sizes, tokens, memory, timed steps); train nothing."),
    ] = False,
) -> None:
    """Distill a teacher into a student.

    The loss is ce_weight·CE + kd_weight·T²·KD + hidden_weight·H over the teacher's completion
    tokens, averaged over all target tokens of the optimizer step. KD is the --kind divergence
    against the stored top-k (topk) or the live teacher (online; fused from hidden states, so
    no full logits are held); on_policy has the student write the completions (with
    probability --lmbda) and the live teacher grade them (reverse_kl by default). See
    docs/distill.md and docs/losses.md. Writes RUN/config.yaml, RUN/metrics.jsonl,
    RUN/checkpoints/ and the trained student as a Hugging Face folder in RUN/final (with
    --lora, the adapter: `retort merge RUN` writes the merged model).
    """
    from retort.config import apply_overrides, build, load_yaml, parse_lora
    from retort.train.loop import distill as run
    from retort.train.loop import leave_process_group

    if config is None and resume and out is not None and (out / "config.yaml").is_file():
        config = out / "config.yaml"  # --out RUN --resume alone: the run's own settings
    values: dict[str, Any] = load_yaml(config) if config else {}
    source = str(config) if config else "retort distill"
    flags = {
        "data": data,
        "out": out,
        "student": student,
        "teacher": teacher,
        "teacher_model": teacher_model,
        "tokenizer": tokenizer,
        "objective": objective,
        "kind": kind,
        "lmbda": lmbda,
        "beta": beta,
        "alpha": alpha,
        "hidden_weight": hidden_weight,
        "kd_rescale": kd_rescale,
        "pack": pack,
        "lora": parse_lora(lora) if lora else None,
        "fsdp": [name.strip() for name in fsdp.split(",") if name.strip()] if fsdp else None,
        "max_steps": max_steps,
        "max_tokens": max_tokens,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "learning_rate": learning_rate,
        "ce_weight": ce_weight,
        "kd_weight": kd_weight,
        "temperature": temperature,
        "uld_weight": uld_weight,
        "live_top_k": live_top_k,
        "save_every": save_every,
        "eval_data": eval_data,
        "eval_every": eval_every,
        "keep_checkpoints": keep_checkpoints,
        "allow_other_teacher": allow_other_teacher,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    values = apply_overrides(values, overrides or [])
    settings = build(DistillConfig, values, source)
    if dry_run:
        _print_plan(settings)
        return
    result = run(settings, resume=resume, progress=RichProgress())
    leave_process_group()  # on success only: a failed rank would leave the others at a barrier
    if result.resumed_at == result.steps:  # resumed a run that had already finished
        err.print(f"{result.run_dir}: already finished at step {result.steps}; nothing to train")
        return
    err.print(
        f"{result.run_dir}: {result.steps} steps, last loss {result.last_loss:.4f} "
        f"({result.seconds:.1f} s); student in {result.final_dir}"
    )


def _print_plan(settings: Any) -> None:
    from rich.table import Table

    from retort.cli.console import out
    from retort.train.plan import dry_run

    err.print("dry run: timing a few steps in a scratch folder; nothing is written to --out")
    plan = dry_run(settings)
    table = Table(title=f"plan of {settings.out} ({settings.objective})", show_header=False)
    for key, value in plan.items():
        count = isinstance(value, int) and not isinstance(value, bool)
        table.add_row(key.replace("_", " "), f"{value:,}" if count else str(value))
    out.print(table)
