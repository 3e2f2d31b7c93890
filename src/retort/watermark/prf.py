"""The keyed pseudorandom function every scheme reads: a uniform u(context, token) in [0, 1).

KGW calls a token green when u < gamma; Gumbel-max writes the token with the largest
u ** (1 / p). One construction serves both, and it is portable: HMAC-SHA256 and 64-bit integer
arithmetic that wraps modulo 2**64, the same in Python ints and numpy uint64 on any machine,
independent of torch, devices and library versions (never ``torch.Generator``).

Construction, version 1 (enough to reimplement the detector without retort)::

    ids(x...)  each token id as 4 bytes, big-endian, unsigned
    TAG        b"retort-watermark/v1/" + scheme + b"/" + seeding
               e.g. b"retort-watermark/v1/kgw/lefthash", b"retort-watermark/v1/gumbel/lefthash"
    HMAC64(m)  the first 8 bytes of HMAC-SHA256(secret, m), as a big-endian unsigned integer
    MIX(s, t)  z = (s XOR (t * 0x9E3779B97F4A7C15)) + 0x9E3779B97F4A7C15
               z = (z XOR (z >> 30)) * 0xBF58476D1CE4E5B9
               z = (z XOR (z >> 27)) * 0x94D049BB133111EB
               MIX = z XOR (z >> 31)                     (splitmix64's finalizer; all mod 2**64)
    UNIT(z)    (z >> 11) / 2**53                          (exact in float64; in [0, 1))

    seed, lefthash (context = the h ids before t, fewer at the start of a sequence):
        seed(context, t) = HMAC64(TAG + b"\\x00" + ids(context))
    seed, selfhash (width h: context = the h - 1 ids before t, and t itself):
        seed(context, t) = min over a in context + [t] of MIX(HMAC64(TAG + b"\\x01" + ids(a)), t)

    u(context, t) = UNIT(MIX(seed(context, t), t))

lefthash is Kirchenbauer et al.'s "simple" h-gram seeding: one seed per context, so a whole
vocabulary's u is one HMAC and one vectorized MIX. selfhash follows "On the Reliability of
Watermarks for Large Language Models" (their Algorithm 3, "anchored minhash"): the seed is a
minimum over hashes of (context token, candidate) pairs, anchored on the candidate, so the
green test depends on the candidate and one edited context token rarely changes it.

Two different (seed, t) pairs give independent uniforms (modelling HMAC as a random function
and MIX as a bijection of its input), which is what makes the detectors' null distributions
exact when each pair is scored once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB
SEEDINGS = ("lefthash", "selfhash")
_CONTEXT, _TOKEN = b"\x00", b"\x01"  # domain separation of the two HMAC inputs
_SEED_CACHE = 1 << 16  # seeds are ints: a large cache costs little
# Whole-vocabulary vectors kept by the logits processors, per key, across batches: a KGW green
# mask is V bytes (1024 of them: 50 MB at V = 49k), a Gumbel u vector V float64s (64: 25 MB).
MASK_CACHE, VECTOR_CACHE = 1024, 64


def tag(scheme: str, seeding: str) -> bytes:
    """The HMAC domain tag of a scheme and seeding, e.g. ``retort-watermark/v1/kgw/lefthash``."""
    return f"retort-watermark/v1/{scheme}/{seeding}".encode()


def hmac64(secret: bytes, message: bytes) -> int:
    """The first 8 bytes of HMAC-SHA256(secret, message) as a big-endian unsigned integer."""
    return int.from_bytes(hmac.digest(secret, message, hashlib.sha256)[:8], "big")


def encode_ids(ids: Sequence[int]) -> bytes:
    """Token ids as consecutive 4-byte big-endian unsigned integers."""
    return b"".join(int(i).to_bytes(4, "big") for i in ids)


def mix(seed: int, token: int) -> int:
    """MIX(seed, token) on Python ints (the scalar twin of :func:`mix_array`)."""
    z = ((seed ^ (token * GOLDEN)) + GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * MUL1) & MASK
    z = ((z ^ (z >> 27)) * MUL2) & MASK
    return z ^ (z >> 31)


def unit(z: int) -> float:
    """UNIT(z): the top 53 bits of z as a float in [0, 1)."""
    return (z >> 11) * 2.0**-53


def mix_array(seed: Any, tokens: np.ndarray) -> np.ndarray:
    """MIX over arrays: ``seed`` a uint64 scalar or array broadcast against ``tokens``.

    numpy wraps uint64 arithmetic on arrays modulo 2**64 without warnings (it warns only on
    scalars, hence the 1-element arrays)."""
    z = np.asarray(seed, dtype=np.uint64).reshape(-1) ^ (
        np.asarray(tokens, dtype=np.uint64) * np.uint64(GOLDEN)
    )
    z = z + np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MUL1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MUL2)
    return z ^ (z >> np.uint64(31))


def unit_array(z: np.ndarray) -> np.ndarray:
    """UNIT over a uint64 array, as float64."""
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class PRF:
    """u(context, token) for one secret, scheme and seeding, with per-context seed caches.

    Args:
        secret: the key's 32 random bytes.
        scheme: ``kgw`` or ``gumbel`` (part of the HMAC tag).
        seeding: ``lefthash`` or ``selfhash``.
    """

    def __init__(self, secret: bytes, scheme: str, seeding: str) -> None:
        if seeding not in SEEDINGS:
            raise ValueError(f"seeding {seeding!r}: one of {', '.join(SEEDINGS)}")
        self.secret, self.seeding = secret, seeding
        self._tag = tag(scheme, seeding)
        # Bound per instance, so two keys never share (or evict) each other's entries.
        self.context_seed = lru_cache(maxsize=_SEED_CACHE)(self._context_seed)
        self.token_seed = lru_cache(maxsize=_SEED_CACHE)(self._token_seed)
        self._token_table = np.zeros(0, dtype=np.uint64)  # selfhash: token_seed of 0..n-1
        self.green_masks = LRU(MASK_CACHE)  # (context, V) -> bool (V,), filled by KGW
        self.uniform_vectors = LRU(VECTOR_CACHE)  # (context, V) -> float64 (V,), by Gumbel

    def _context_seed(self, context: tuple[int, ...]) -> int:
        return hmac64(self.secret, self._tag + _CONTEXT + encode_ids(context))

    def _token_seed(self, token: int) -> int:
        return hmac64(self.secret, self._tag + _TOKEN + encode_ids((token,)))

    def seed(self, context: Sequence[int], token: int) -> int:
        """seed(context, token): the 64-bit value u is drawn from (see the module docstring)."""
        if self.seeding == "lefthash":
            return self.context_seed(tuple(context))
        return min(mix(self.token_seed(a), token) for a in (*context, token))

    def uniform(self, context: Sequence[int], token: int) -> float:
        """u(context, token) for one token, on Python ints (the detector's path)."""
        return unit(mix(self.seed(context, token), token))

    def uniforms(self, context: Sequence[int], tokens: np.ndarray | int) -> np.ndarray:
        """u(context, t) for every t in ``tokens`` (an id array, or ``V`` for ids 0..V-1).

        Returns:
            float64 array, one value per token; equal to :meth:`uniform` value for value.
        """
        ids = np.arange(tokens, dtype=np.uint64) if np.isscalar(tokens) else np.asarray(tokens)
        ids = ids.astype(np.uint64)
        if self.seeding == "lefthash":
            seeds = np.uint64(self.context_seed(tuple(int(a) for a in context)))
        else:
            seeds = mix_array(self._token_seeds(ids), ids)  # the pair (t, t) itself
            for a in context:
                seeds = np.minimum(seeds, mix_array(np.uint64(self.token_seed(int(a))), ids))
        return unit_array(mix_array(seeds, ids))

    def _token_seeds(self, ids: np.ndarray) -> np.ndarray:
        """token_seed of each id, from a table grown to the largest id asked for (a
        vocabulary's worth of HMACs once, ~0.1 s for 50k ids)."""
        needed = int(ids.max()) + 1 if ids.size else 0
        if needed > self._token_table.size:
            start = self._token_table.size
            grown = [self.token_seed(t) for t in range(start, needed)]
            self._token_table = np.concatenate(
                [self._token_table, np.array(grown, dtype=np.uint64)]
            )
        return self._token_table[ids.astype(np.intp)]


class LRU:
    """A small least-recently-used map (vectors per context in the logits processors)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
