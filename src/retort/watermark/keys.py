"""Watermark keys: what a scheme needs (scheme, seeding, context width, gamma, delta) and the
secret, kept in a JSON file that only its owner can read.

A key file::

    {
      "format": "retort-watermark-key", "version": 1,
      "scheme": "kgw",                # or "gumbel"
      "seeding": "lefthash",          # or "selfhash" (kgw only)
      "context_width": 1,             # h: ids the PRF reads (selfhash: h - 1 ids and the token)
      "gamma": 0.25, "delta": 2.0,    # kgw only: green share, logit bias
      "secrets": ["<64 hex digits>"], # 32 random bytes; two for a dual-key gumbel key
      "tokenizer": {"sha256": "...", "vocab_size": 49152},   # optional, see below
      "created": "2025-01-01T00:00:00+00:00"
    }

The key id (``key_id``) is the first 16 hex digits of sha256 of the secret bytes (both,
concatenated, for a dual key): safe to record in store fingerprints and reports; the secret
itself never leaves the file. ``tokenizer`` is recorded when keygen is given ``--tokenizer``:
the PRF reads token ids, so a key is only meaningful with the tokenizer whose ids it saw, and
generate, serve and detect refuse any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets as secrets_module
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from retort.errors import ConfigError
from retort.watermark.prf import PRF, SEEDINGS

FORMAT = "retort-watermark-key"
VERSION = 1
SCHEMES = ("kgw", "gumbel")
SECRET_BYTES = 32
# Defaults: Kirchenbauer et al.'s gamma 0.25, delta 2 with h = 1 (lefthash) or their selfhash
# h = 4; Gumbel reads 4 ids, as vLLM's Gumbel watermark does by default.
GAMMA, DELTA = 0.25, 2.0
DEFAULT_WIDTH = {("kgw", "lefthash"): 1, ("kgw", "selfhash"): 4, ("gumbel", "lefthash"): 4}
MAX_WIDTH, MAX_DELTA = 64, 100.0  # past these a key is a typo, not a watermark


@dataclass(frozen=True)
class Key:
    """A watermark key. Build one with :func:`new_key`, read one with :func:`load_key`.

    Attributes:
        scheme: ``kgw`` (green lists, logit bias) or ``gumbel`` (Gumbel-max sampling).
        seeding: ``lefthash`` or ``selfhash`` (kgw only).
        context_width: h. lefthash reads the h ids before a token; selfhash reads h - 1 ids
            and the token itself.
        gamma: kgw: the share of the vocabulary that is green in each context.
        delta: kgw: the bias added to green logits.
        secrets: one secret (two for a dual-key gumbel key), 32 bytes each.
        tokenizer: ``{"sha256", "vocab_size"}`` of the tokenizer the key is for, or None.
        name: where the key came from (its file name), for messages and reports.
    """

    scheme: str
    seeding: str
    context_width: int
    gamma: float | None
    delta: float | None
    secrets: tuple[bytes, ...]
    tokenizer: dict[str, Any] | None = None
    name: str = "key"
    prfs: tuple[PRF, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ConfigError(f"{self.name}: {problem}")
        prfs = tuple(PRF(s, self.scheme, self.seeding) for s in self.secrets)
        object.__setattr__(self, "prfs", prfs)  # frozen: the caches live with the key

    @property
    def key_id(self) -> str:
        """First 16 hex digits of sha256 of the secret bytes: names the key, reveals nothing."""
        return hashlib.sha256(b"".join(self.secrets)).hexdigest()[:16]

    @property
    def dual(self) -> bool:
        return len(self.secrets) == 2

    @property
    def history(self) -> int:
        """How many ids before a token its u reads: h (lefthash) or h - 1 (selfhash). The
        detector skips this many tokens at the start of a text (no full context there)."""
        return self.context_width - (1 if self.seeding == "selfhash" else 0)

    def context_of(self, ids: list[int] | tuple[int, ...], position: int) -> tuple[int, ...]:
        """The context of the token at ``position`` of ``ids``: the ``history`` ids before it."""
        return tuple(ids[max(0, position - self.history) : position])

    def uniforms(self, context: Any, vocab_size: int, which: int = 0) -> np.ndarray:
        """u(context, t) for t in 0..vocab_size-1 under secret ``which`` (float64, (V,))."""
        return self.prfs[which].uniforms(list(context)[-self.history :], vocab_size)

    def green_mask(self, context: Any, vocab_size: int) -> np.ndarray:
        """kgw: which of ids 0..vocab_size-1 are green after ``context`` (bool, (V,))."""
        if self.scheme != "kgw":
            raise ConfigError(f"{self.name}: a {self.scheme} key has no green lists")
        return self.uniforms(context, vocab_size) < self.gamma

    def public(self) -> dict[str, Any]:
        """Everything but the secret: for store fingerprints, reports and logs."""
        return {
            "scheme": self.scheme,
            "seeding": self.seeding,
            "context_width": self.context_width,
            "gamma": self.gamma,
            "delta": self.delta,
            "dual": self.dual,
            "key_id": self.key_id,
        }


def new_key(
    scheme: str = "kgw",
    *,
    seeding: str = "lefthash",
    context_width: int | None = None,
    gamma: float | None = None,
    delta: float | None = None,
    dual: bool = False,
    tokenizer: Any = None,
    name: str = "key",
) -> Key:
    """A key with fresh secrets from ``secrets.token_bytes``; unset values take the defaults
    (kgw: gamma 0.25, delta 2, lefthash h=1 or selfhash h=4; gumbel: h=4).

    Args:
        tokenizer: when given, the key records its fingerprint and is refused with others.

    Raises:
        ConfigError: a setting that does not apply to ``scheme`` or is out of range.
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"--scheme {scheme}: one of {', '.join(SCHEMES)}")
    if scheme == "gumbel":
        for flag, value in (("--gamma", gamma), ("--delta", delta)):
            if value is not None:
                raise ConfigError(f"{flag}: only for --scheme kgw (gumbel adds no bias)")
        if seeding != "lefthash":
            raise ConfigError(
                f"--seeding {seeding}: gumbel reads the last --context ids (lefthash); "
                "selfhash is a kgw seeding"
            )
    elif dual:
        raise ConfigError("--dual: only for --scheme gumbel (two keys for diverse samples)")
    if seeding not in SEEDINGS:
        raise ConfigError(f"--seeding {seeding}: one of {', '.join(SEEDINGS)}")
    least = 2 if seeding == "selfhash" else 1
    if context_width is not None and not least <= context_width <= MAX_WIDTH:
        raise ConfigError(f"--context {context_width}: an integer from {least} to {MAX_WIDTH}")
    if gamma is not None and not 0 < gamma < 1:
        raise ConfigError(f"--gamma {gamma}: a number in (0, 1), e.g. 0.25")
    if delta is not None and not 0 < delta <= MAX_DELTA:
        raise ConfigError(f"--delta {delta}: a number in (0, {MAX_DELTA:g}], e.g. 2")
    kgw = scheme == "kgw"
    return Key(
        scheme=scheme,
        seeding=seeding,
        context_width=context_width or DEFAULT_WIDTH[(scheme, seeding)],
        gamma=(GAMMA if gamma is None else gamma) if kgw else None,
        delta=(DELTA if delta is None else delta) if kgw else None,
        secrets=tuple(secrets_module.token_bytes(SECRET_BYTES) for _ in range(2 if dual else 1)),
        tokenizer=tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
        name=name,
    )


def save_key(key: Key, path: Path, *, force: bool = False) -> Path:
    """Write ``key`` to ``path`` with mode 0600, atomically (a temporary file in the same
    folder, then a rename), refusing an existing file unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path}: exists; choose another --out, or --force to replace it")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: folder {path.parent} does not exist; create it first")
    record = {
        "format": FORMAT,
        "version": VERSION,
        **{k: v for k, v in key.public().items() if k not in ("dual", "key_id")},
        "secrets": [s.hex() for s in key.secrets],
        "tokenizer": key.tokenizer,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    partial = path.with_name(f".{path.name}.{secrets_module.token_hex(4)}.partial")
    # Created 0600 from the start: the secret is never readable by others, not even briefly.
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps(record, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(partial, path)
        else:
            try:  # link fails if the name appeared meanwhile: never replaces another key
                os.link(partial, path)
            except FileExistsError:
                raise ConfigError(
                    f"{path}: exists; choose another --out, or --force to replace it"
                ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return path


def load_key(path: Path | str) -> Key:
    """Read a key file.

    Raises:
        ConfigError: the file is missing or is not a valid key file; the message names the
            file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: key file not found; make one with retort watermark keygen")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(
            f"{path}: not a watermark key file (not JSON); make one with retort watermark keygen"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigError(
            f"{path}: not a watermark key file (format is not {FORMAT!r}); "
            "make one with retort watermark keygen"
        )
    if record.get("version") != VERSION:
        raise ConfigError(
            f"{path}: key file version {record.get('version')!r}; this retort reads {VERSION}"
        )
    for name in ("scheme", "seeding", "context_width", "secrets"):
        if name not in record:
            raise ConfigError(f'{path}: key file has no "{name}"; make a new one with keygen')
    secrets = record["secrets"]
    if not isinstance(secrets, list) or not all(_is_secret(s) for s in secrets):
        raise ConfigError(
            f'{path}: "secrets" must be a list of {2 * SECRET_BYTES}-hex-digit strings'
        )
    return Key(
        scheme=record["scheme"],
        seeding=record["seeding"],
        context_width=record["context_width"],
        gamma=record.get("gamma"),
        delta=record.get("delta"),
        secrets=tuple(bytes.fromhex(s) for s in secrets),
        tokenizer=record.get("tokenizer"),
        name=str(path),
    )


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """``{"sha256", "vocab_size"}`` of a tokenizer (its vocabulary and special tokens)."""
    from retort.models.vocab import tokenizer_hash

    return {"sha256": tokenizer_hash(tokenizer), "vocab_size": len(tokenizer)}


def check_tokenizer(key: Key, tokenizer: Any, flag: str = "--tokenizer") -> None:
    """Refuse a tokenizer other than the one the key records (keys without one accept any).

    Raises:
        ConfigError: naming the key file, both tokenizers and the fix.
    """
    if not key.tokenizer:
        return
    given, made_for = tokenizer_fingerprint(tokenizer), key.tokenizer
    if given["sha256"] != made_for.get("sha256"):
        raise ConfigError(
            f"{key.name}: key is for another tokenizer (sha256 {str(made_for.get('sha256'))[:12]}, "
            f"{made_for.get('vocab_size')} tokens; {flag} has {given['sha256'][:12]}, "
            f"{given['vocab_size']} tokens); use the tokenizer the key was made for"
        )


def _is_secret(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 2 * SECRET_BYTES:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _problem(key: Key) -> str | None:
    """What is wrong with a key's settings, or None."""
    if key.scheme not in SCHEMES:
        return f"scheme {key.scheme!r}: one of {', '.join(SCHEMES)}"
    if key.seeding not in SEEDINGS:
        return f"seeding {key.seeding!r}: one of {', '.join(SEEDINGS)}"
    if key.scheme == "gumbel" and key.seeding != "lefthash":
        return "seeding selfhash is for kgw keys; gumbel reads the last context_width ids"
    least = 2 if key.seeding == "selfhash" else 1
    width = key.context_width
    if isinstance(width, bool) or not isinstance(width, int) or not least <= width <= MAX_WIDTH:
        return f"context_width {width!r}: an integer from {least} to {MAX_WIDTH}"
    if len(key.secrets) not in (1, 2) or any(len(s) != SECRET_BYTES for s in key.secrets):
        return f"one secret of {SECRET_BYTES} bytes (two for a dual-key gumbel key)"
    if key.scheme == "kgw":
        if len(key.secrets) != 1:
            return "a kgw key has one secret (dual keys are for gumbel)"
        if not _number(key.gamma) or not 0 < key.gamma < 1:
            return f"gamma {key.gamma!r}: a number in (0, 1), e.g. 0.25"
        if not _number(key.delta) or not 0 < key.delta <= MAX_DELTA:
            return f"delta {key.delta!r}: a number in (0, {MAX_DELTA:g}], e.g. 2"
    elif key.gamma is not None or key.delta is not None:
        return "gamma and delta are kgw settings; a gumbel key has neither"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
