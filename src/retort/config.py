"""Typed, strict run configurations.

Every verb that writes an output folder validates its settings here first, so a typo fails
before any model loads: an unknown key names the nearest valid spelling, an out-of-range value
names the key and the bound. The resolved config is saved next to the output so the run can be
repeated exactly (``retort distill --config RUN/config.yaml``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from retort.errors import ConfigError

Objective = Literal["sft", "topk", "online", "on_policy", "cross_tokenizer"]
Kind = Literal["forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd"]
# Names from the first release: `topk_kl` is `topk` with forward KL, `online_kl` likewise.
OBJECTIVE_ALIASES = {"topk_kl": "topk", "online_kl": "online"}


def is_http_teacher(spec: str | None) -> bool:
    """A teacher spec that names an OpenAI-compatible server (http(s)://…/v1)."""
    return bool(spec) and spec.startswith(("http://", "https://"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GenerateConfig(_Strict):
    """Settings of ``retort generate``: prompts through a teacher into a store."""

    teacher: str = Field(description="Model spec: local folder, hub id or alias.")
    prompts: Path = Field(
        description="Prompts: .jsonl/.parquet/.csv file, datasets folder or Parquet folder."
    )
    dedup: bool = Field(False, description="Drop prompts that repeat an earlier one.")
    out: Path = Field(description="Store directory; created, or resumed when it exists.")
    mode: Literal["generate", "score"] = Field(
        "generate", description="generate: the teacher writes; score: it scores `completion`s."
    )
    top_k: int = Field(20, ge=0, le=1000, description="Teacher logprobs kept per position.")
    codec: Literal["plain", "q8"] = Field(
        "plain", description="Top-k storage: plain (int32/float32) or q8 (~2.6x smaller)."
    )
    max_new_tokens: int = Field(128, ge=1, description="Completion length cap.")
    temperature: float = Field(0.0, ge=0.0, description="0 is greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    batch_size: int = Field(8, ge=1, description="Prompts generated together.")
    seed: int = Field(0, description="Sampling seed (seeds each batch).")
    rows_per_shard: int = Field(64, ge=1, description="Rows per Parquet shard written.")
    shard: str | None = Field(
        None, pattern=r"^\d+/\d+$", description="i/n: this process takes shard i of n."
    )
    watermark: Path | None = Field(
        None, description="Watermark key file (retort watermark keygen); local teachers only."
    )
    # HTTP teachers (teacher is an http(s)://.../v1 URL)
    teacher_model: str | None = Field(None, description="Model name on the server.")
    tokenizer: str | None = Field(
        None,
        description="The teacher's tokenizer (spec). Unset: completions reads teacher_model as "
        "a spec; chat loads none and writes a text store (docs/store.md#text-stores).",
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable of the key.")
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="completions: token ids, exact; chat: server renders."
    )
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    rpm: int | None = Field(None, ge=1, description="Client-side requests per minute.")
    tpm: int | None = Field(None, ge=1, description="Client-side tokens per minute.")
    timeout: float = Field(120.0, gt=0, description="Seconds per request.")
    max_retries: int = Field(5, ge=0, description="Retries of a retryable failure.")
    max_teacher_tokens: int | None = Field(None, ge=1, description="Stop after this many.")
    price_per_1k_in: float = Field(0.0, ge=0.0)
    price_per_1k_out: float = Field(0.0, ge=0.0)
    max_cost: float | None = Field(None, gt=0.0, description="Stop once this is spent.")

    @model_validator(mode="after")
    def _consistent(self) -> GenerateConfig:
        if self.shard:
            index, count = (int(p) for p in self.shard.split("/"))
            if not 0 <= index < count:
                raise ValueError(f"shard: {self.shard} needs 0 <= i < n, e.g. 0/4")
        if self.watermark is not None and is_http_teacher(self.teacher):
            raise ValueError(
                "watermark: an HTTP teacher samples on its server, which must watermark: start "
                "it with `retort serve --watermark KEYFILE` and capture without --watermark"
            )
        if self.watermark is not None and self.mode == "score":
            raise ValueError("watermark: score mode writes no text to watermark; drop it")
        return self


class LoraSettings(_Strict):
    """A LoRA adapter on the student (PEFT): only the adapters train."""

    r: int = Field(16, ge=1, description="Rank of each adapter.")
    alpha: float = Field(32.0, gt=0.0, description="Scale numerator: updates scale by alpha/r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: list[str] | str = Field(
        "all-linear",
        description="Module names to adapt, or all-linear (every linear but the head).",
    )


def parse_lora(spec: str) -> dict[str, Any]:
    """``r=16,alpha=32,targets=q_proj,v_proj`` → a mapping; a bare name after ``targets=``
    adds one more target."""
    values: dict[str, Any] = {}
    last = None
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        key, sep, value = item.partition("=")
        if not sep:
            if last != "targets":
                raise ConfigError(
                    f"--lora {spec!r}: '{item}' is not KEY=VALUE; "
                    "e.g. r=16,alpha=32,targets=q_proj,v_proj"
                )
            values["targets"].append(item)
            continue
        last = key
        values[key] = [value] if key == "targets" else yaml.safe_load(value)
    if values.get("targets") == ["all-linear"]:
        values["targets"] = "all-linear"
    return values


class DistillConfig(_Strict):
    """Settings of ``retort distill``: a student trained on a store (and maybe a live teacher).

    The loss is ``kd_weight * temperature**2 * KD + ce_weight * CE + hidden_weight * H`` over
    completion tokens, averaged over the global count of target tokens in the optimizer step.
    ``sft`` has no KD term (``ce_weight`` defaults to 1 there, 0 otherwise).
    """

    data: Path = Field(description="Store written by `retort generate`.")
    out: Path = Field(description="Run folder: checkpoints, metrics.jsonl, config.yaml, final/.")
    student: str = Field(
        description="`prune:N` (N layers of the teacher; more in docs/distill.md: "
        "prune:N:importance, mlp=M, heads=H) or a model spec."
    )
    prune_calibration: int = Field(
        64,
        ge=1,
        description="prune:...:importance and width pruning: store rows to measure importance on.",
    )
    teacher: str | None = Field(
        None, description="Model spec; needed by online, hidden_weight > 0 and prune:N students."
    )
    lora: LoraSettings | None = Field(
        None, description="Train a LoRA adapter instead of every weight (--lora r=16,alpha=32)."
    )
    # A teacher behind an HTTP API (teacher is an http(s)://.../v1 URL; on_policy only)
    teacher_model: str | None = Field(None, description="HTTP teacher: model name on the server.")
    tokenizer: str | None = Field(
        None, description="HTTP teacher: its tokenizer (spec); default: teacher_model."
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable of the key.")
    concurrency: int = Field(8, ge=1, description="HTTP teacher: scoring requests at once.")
    max_retries: int = Field(5, ge=0, description="HTTP teacher: retries of a failed request.")
    timeout: float = Field(120.0, gt=0, description="HTTP teacher: seconds per request.")
    teacher_device: str | None = Field(
        None,
        description="Device of the live teacher, e.g. cuda:1 or cpu (default: the student's).",
    )
    fsdp: list[Literal["student", "teacher"]] = Field(
        default_factory=list,
        description="Shard these models over the run's processes with FSDP2 (docs/scale.md): "
        "student (weights, gradients, optimizer state), teacher (inference weights).",
    )
    objective: Objective = Field(
        "topk", description="sft | topk | online | on_policy | cross_tokenizer"
    )
    kind: Kind = Field(
        "forward_kl",
        description="Divergence of the KD term (docs/losses.md); on_policy: reverse_kl.",
    )
    lmbda: float = Field(
        1.0, ge=0.0, le=1.0, description="on_policy: share of batches the student samples."
    )
    sample_max_new_tokens: int = Field(
        128, ge=1, description="on_policy: length cap of the student's samples."
    )
    sample_temperature: float = Field(
        1.0, gt=0.0, description="on_policy: sampling temperature of the student."
    )
    beta: float = Field(0.5, gt=0.0, lt=1.0, description="jsd: the teacher's mixture weight.")
    alpha: float = Field(0.1, ge=0.0, lt=1.0, description="skew KLs: the skew weight.")
    fused: bool = Field(
        True, description="online: compute KD from hidden states in chunks (no full logits)."
    )
    chunk_size: int = Field(256, ge=1, description="Tokens per chunk of the fused path.")
    kd_weight: float = Field(1.0, ge=0.0, description="Weight of the distillation term.")
    uld_weight: float = Field(
        1.0,
        ge=0.0,
        description="cross_tokenizer: weight of the ULD part (tokens that do not match one to "
        "one) against the matched part, both inside the distillation term.",
    )
    live_top_k: int = Field(
        0,
        ge=0,
        description="cross_tokenizer: score each batch with the local teacher (teacher, any "
        "tokenizer) and distill its top-k per position instead of the store's (0: the store's).",
    )
    ce_weight: float | None = Field(
        None, ge=0.0, description="Weight of cross-entropy on teacher tokens (default: see above)."
    )
    kd_rescale: bool = Field(
        False, description="Scale KD to CE's running magnitude (terms are often 100-1000x apart)."
    )
    hidden_weight: float = Field(0.0, ge=0.0, description="Weight of the hidden-state loss.")
    hidden_loss: Literal["mse", "cosine"] = Field("mse")
    layer_map: list[int] | None = Field(
        None, description="Teacher layer (1-based) per student layer; default evenly spaced."
    )
    temperature: float = Field(1.0, gt=0.0, description="Softmax temperature of the KD term.")
    learning_rate: float = Field(2e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(10, ge=0)
    max_steps: int = Field(100, ge=1, description="Optimizer steps; the data repeats as needed.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Token budget: stop once this many target tokens are trained; the cosine "
        "schedule then follows tokens (max_steps stays a cap).",
    )
    batch_size: int = Field(8, ge=1, description="Sequences per micro-batch per process.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_seq_len: int = Field(512, ge=8, description="Longer rows are cut (completion end).")
    pack: bool = Field(
        True,
        description="Pack each micro-batch's examples into shared rows (no compute on padding; "
        "the same losses); false: one padded row per example.",
    )
    pack_width: int = Field(
        1024,
        ge=1,
        description="pack: tokens per packed row (at least the micro-batch's longest example); "
        "attention inside a row costs its width squared.",
    )
    max_grad_norm: float = Field(1.0, gt=0.0)
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no")
    save_every: int = Field(50, ge=1, description="Checkpoint every N steps (and at the end).")
    allow_other_teacher: bool = Field(
        False,
        description="Train against a store another teacher wrote (topk/online/on_policy refuse "
        "it by default: its top-k or text is not this teacher's).",
    )
    keep_checkpoints: int = Field(
        2,
        ge=0,
        description="Newest checkpoints kept on disk (a run resumes from the newest); 0 keeps "
        "none once final/ is written (the run can then not be extended with --resume).",
    )
    log_every: int = Field(1, ge=1)
    eval_data: Path | None = Field(
        None,
        description="Held-out store scored during training (NLL; top-1 and KL with a live "
        "teacher), into metrics.jsonl and the trackers.",
    )
    eval_every: int = Field(50, ge=1, description="Steps between held-out evaluations.")
    eval_rows: int = Field(256, ge=1, description="Held-out rows scored each time (the first N).")
    trackers: list[Literal["tensorboard", "wandb"]] | None = Field(
        None, description="Besides metrics.jsonl; default: tensorboard when installed."
    )
    wandb_project: str = Field("retort", description="W&B project, with trackers: [wandb].")
    seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        objective = values.get("objective", "topk")
        values = {**values, "objective": OBJECTIVE_ALIASES.get(objective, objective)}
        if values.get("max_tokens") is not None and values.get("max_steps") is None:
            values["max_steps"] = 1_000_000  # the token budget ends the run
        if values.get("kind") is None:
            values["kind"] = "reverse_kl" if values["objective"] == "on_policy" else "forward_kl"
        if values.get("ce_weight") is None:
            values["ce_weight"] = 1.0 if values["objective"] == "sft" else 0.0
        return values

    @model_validator(mode="after")
    def _needs_teacher(self) -> DistillConfig:
        reasons = {
            "objective online": self.objective == "online",
            "objective on_policy": self.objective == "on_policy",
            "hidden_weight > 0": self.hidden_weight > 0,
            "student prune:N": self.student.startswith("prune:"),
            "live_top_k > 0": self.live_top_k > 0,
        }
        why = [reason for reason, applies in reasons.items() if applies]
        if why and not self.teacher:
            raise ValueError(f"teacher: required by {why[0]}; pass --teacher SPEC")
        remote = is_http_teacher(self.teacher)
        # Settings that would be silently ignored are refused (defaults, as a saved
        # config.yaml holds them, are fine).
        changed = {k for k in self.model_fields_set if getattr(self, k) != _default(type(self), k)}
        for key in ("teacher_model", "tokenizer", "concurrency", "max_retries", "timeout"):
            if key in changed and not remote:
                raise ValueError(f"{key}: only for an HTTP teacher (--teacher http://…/v1)")
        if self.objective != "on_policy":
            for key in ("lmbda", "sample_max_new_tokens", "sample_temperature"):
                if key in changed:
                    raise ValueError(f"{key}: only for objective on_policy")
        if self.live_top_k and self.objective != "cross_tokenizer":
            raise ValueError(
                "live_top_k: only for objective cross_tokenizer (a teacher of the student's "
                "tokenizer distills its full distribution with objective online)"
            )
        if self.fsdp:
            _check_fsdp(self, remote)
        local_only = [r for r in why if r != "objective on_policy"]
        if remote and local_only:
            raise ValueError(
                f"teacher: {local_only[0]} needs a local teacher (full distribution or "
                "weights); an HTTP teacher serves on_policy, or capture with retort generate"
            )
        return self


def _check_fsdp(config: DistillConfig, remote: bool) -> None:
    """Settings that cannot go with a sharded student or teacher, refused before loading."""
    if len(set(config.fsdp)) != len(config.fsdp):
        raise ValueError(f"fsdp: {config.fsdp} names a model twice; e.g. student,teacher")
    if "teacher" in config.fsdp and (remote or not config.teacher):
        raise ValueError("fsdp: teacher shards a local teacher; this run has none to shard")
    if "teacher" in config.fsdp and config.teacher_device:
        raise ValueError(
            "fsdp: a sharded teacher lives on every process's device; drop teacher_device"
        )
    if "student" in config.fsdp and config.lora is not None:
        raise ValueError(
            "fsdp: student with lora is not supported (adapters train little state); "
            "train LoRA under DDP and shard the teacher alone (--fsdp teacher)"
        )


def _default(model: type[BaseModel], key: str) -> Any:
    return model.model_fields[key].get_default(call_default_factory=True)


def build(model: type[_Strict], values: dict[str, Any], source: str) -> Any:
    """Validate ``values`` into ``model``; errors name ``source`` and the key, in one line."""
    valid = list(model.model_fields)
    for key in values:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(valid)}"
            raise ConfigError(f"{source}: unknown key '{key}'{hint}")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        message = first["msg"].removeprefix("Value error, ")
        if message.startswith(f"{where}:"):
            raise ConfigError(f"{source}: {message}") from None
        raise ConfigError(f"{source}: {where}: {message}") from None


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a recipe: a YAML mapping of keys to values."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML; check indentation and quoting") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of keys to values, not a list or value")
    return data


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` (or ``a.b=value``) overrides; values are parsed as YAML scalars."""
    result = dict(values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set learning_rate=1e-4")
        target = result
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is a value, not a group of keys")
        try:
            target[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    return result


def save_yaml(config: BaseModel, path: Path) -> None:
    """Write the resolved config (every default filled in) as YAML, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    tmp.replace(path)
