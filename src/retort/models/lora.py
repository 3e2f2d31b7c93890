"""LoRA students (PEFT): wrap a student so only adapter weights train, and merge a finished
run's adapter back into a plain Hugging Face model folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retort.config import DistillConfig, LoraSettings, load_yaml
from retort.errors import ConfigError, ModelError
from retort.models.loading import save_model_folder
from retort.models.pruning import PRUNED_FILE

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ADAPTER_CONFIG = "adapter_config.json"


def add_lora(model: PreTrainedModel, settings: LoraSettings, seed: int = 0) -> Any:
    """The model wrapped with fresh adapters (initialised from ``seed``, so a run and its
    resumption start alike); every base weight frozen."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.targets,
        task_type="CAUSAL_LM",
    )
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return get_peft_model(model, config)
    except ValueError as exc:  # peft names the missing modules; keep its words, add the fix
        first = str(exc).splitlines()[0]
        raise ConfigError(
            f"lora.targets {settings.targets}: {first}; name modules of "
            f"{type(model).__name__} (e.g. q_proj,v_proj) or all-linear"
        ) from None


def is_adapter_folder(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def merge_run(run_dir: Path, out: Path | None = None) -> Path:
    """Load a LoRA run's base student, apply ``RUN/final``'s adapter, fold it into the weights
    and write ``out`` (default ``RUN/merged``) as a Hugging Face folder, whole or not at all."""
    from peft import PeftModel

    from retort.config import build
    from retort.models.students import load_student
    from retort.teachers.local import LocalTeacher

    saved = run_dir / "config.yaml"
    adapter = run_dir / "final"
    if not saved.is_file():
        raise ConfigError(f"{run_dir}: not a distill run folder (no config.yaml)")
    if not is_adapter_folder(adapter):
        raise ModelError(
            f"{adapter}: no LoRA adapter here; the run trained every weight and "
            f"{adapter} is already a complete model"
        )
    config = build(DistillConfig, load_yaml(saved), str(saved))
    teacher = LocalTeacher.load(config.teacher) if config.student.startswith("prune:") else None
    record = run_dir / PRUNED_FILE  # what the pruned base kept (importance is not re-measured)
    kept = json.loads(record.read_text()) if record.is_file() else None
    base, tokenizer = load_student(config.student, teacher, kept)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    return save_model_folder(merged, tokenizer, out or run_dir / "merged")
