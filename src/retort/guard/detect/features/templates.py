"""Templates: prompts stamped from one pattern with a slot filled in.

Over the window's requests with text (user text only: a fixed system prompt is an app's,
not a template sweep's). Words are split on white space, lower-cased.

- ``templates.near_duplicate_share``: share of prompts with a near duplicate elsewhere in
  the window. A prompt's MinHash signature (``NUM_PERM`` multiply-shift hashes with a fixed
  seed, over crc32-hashed word 3-shingles) is cut into ``BANDS`` bands of ``ROWS`` rows; two
  prompts are near duplicates when any band matches (LSH candidates: P = 1 − (1 − J⁴)⁸, 0.40
  at Jaccard 0.5, 0.89 at 0.7, 0.06 at 0.3). Band buckets are counted over the window, so
  ``evict`` undoes ``add`` exactly in O(bands), with no pairwise comparison. With hashed
  bodies (``Request.hashed``) only exact repeats of the digest count.
- ``templates.compressibility``: mean over the window of 1 − deflate(prompt | previous
  prompts) / deflate(prompt): the share of a prompt's compressed bytes saved by knowing the
  key's ``ZDICT_PROMPTS`` prompts before it (those may have left the window, so this one
  feature reads a few requests past the window's start). Free text saves little; a template
  with a short slot saves most.
- ``templates.shared_prefix_share`` / ``templates.shared_suffix_share``: share of prompts
  whose first / last ``KEY_WORDS`` words another prompt in the window also has (prompts of
  at least ``MIN_KEY_WORDS`` words have such keys; shorter ones count in the denominator
  only).

``fingerprints`` gives stable hashes of the prefix/suffix (or, hashed, whole-prompt) keys the
window repeats, for linking keys that share a template. ``near_duplicate_share`` is neutral
until ``MIN_REQUESTS`` prompts, the other three until ``MIN_REQUESTS`` readable ones. Long
prompts are read up to ``MAX_CHARS`` characters (``MAX_WORDS`` words for the signature),
which bounds the per-request cost.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import deque
from dataclasses import dataclass

import numpy as np

from retort.guard.detect.features.base import Feature
from retort.guard.detect.request import Request

MIN_REQUESTS = 8
NUM_PERM, BANDS, ROWS = 32, 8, 4
SEED = 20260211
MAX_WORDS = 258  # 256 shingles
MAX_CHARS = 8192
ZDICT_PROMPTS = 4
KEY_WORDS, MIN_KEY_WORDS = 5, 8
PPM = 1_000_000  # savings kept as integer parts per million: sums add and subtract exactly

# MinHash in numpy rather than datasketch's MinHash: its update_batch calls the hash function
# once per shingle in Python and cost ~45 µs for a 150-word prompt, most of the request-path
# budget. Multiply-shift hashing ((a·x + b) mod 2^64) >> 32, a odd, is universal (Dietzfelbinger).
_rng = np.random.RandomState(SEED)
_A = _rng.randint(0, 2**64, size=NUM_PERM, dtype=np.uint64) | np.uint64(1)
_B = _rng.randint(0, 2**64, size=NUM_PERM, dtype=np.uint64)
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))  # shingle = 3 words


def signature(words: list[bytes]) -> bytes:
    """The MinHash signature (``NUM_PERM`` uint32) of a prompt's word 3-shingles."""
    h = np.array(list(map(zlib.crc32, words[:MAX_WORDS])), dtype=np.uint64)  # (W,)
    if len(h) >= 3:
        x = h[:-2] * _MIX[0] + h[1:-1] * _MIX[1] + h[2:]  # (W-2,), wraps mod 2^64
    else:  # a prompt of one or two words is one shingle
        x = np.array([zlib.crc32(b" ".join(words))], dtype=np.uint64)
    return ((x[:, None] * _A + _B) >> np.uint64(32)).min(axis=0).astype(np.uint32).tobytes()


def bands(sig: bytes) -> tuple[tuple[int, bytes], ...]:
    """LSH band keys: (band index, that band's rows)."""
    step = len(sig) // BANDS
    return tuple((i, sig[i * step : (i + 1) * step]) for i in range(BANDS))


def saving(prompt: bytes, previous: bytes) -> int:
    """PPM of the prompt's deflated size saved by ``previous`` as the preset dictionary."""
    if not previous:
        return 0
    alone, primed = _deflate(prompt), _deflate(prompt, previous)
    return max(0, round((1 - primed / alone) * PPM))


def _deflate(data: bytes, zdict: bytes = b"") -> int:
    # raw deflate (wbits −15): no header or checksum to blur short prompts' sizes
    c = (
        zlib.compressobj(6, zlib.DEFLATED, -15, zdict=zdict)
        if zdict
        else zlib.compressobj(6, zlib.DEFLATED, -15)
    )
    return len(c.compress(data) + c.flush())


def _fingerprint(kind: str, key: bytes) -> str:
    return kind + ":" + hashlib.sha256(kind.encode() + b":" + key).hexdigest()[:16]


class _Twins:
    """A multiset that knows how many of its members have a twin (an equal member)."""

    def __init__(self) -> None:
        self.counts: dict[bytes, int] = {}
        self.shared = 0  # members whose key occurs at least twice

    def add(self, key: bytes) -> None:
        c = self.counts.get(key, 0) + 1
        self.counts[key] = c
        self.shared += 2 if c == 2 else int(c > 2)

    def remove(self, key: bytes) -> None:
        c = self.counts[key]
        self.shared -= 2 if c == 2 else int(c > 2)
        if c == 1:
            del self.counts[key]
        else:
            self.counts[key] = c - 1

    def repeated(self, min_count: int) -> list[bytes]:
        return [k for k, c in self.counts.items() if c >= min_count]


@dataclass(frozen=True)
class _Entry:
    """What ``add`` kept of one request, for ``evict`` to take back."""

    id: int
    text: bool = False  # has text at all
    digest: bytes | None = None  # hashed body: the digest, the only thing comparable
    bands: tuple[tuple[int, bytes], ...] = ()
    prefix: bytes | None = None
    suffix: bytes | None = None
    saving: int = 0


class Templates:
    """Near duplicates, compressibility and shared prefixes/suffixes of a key's prompts."""

    features = (
        Feature(
            "templates.near_duplicate_share",
            "{value:.0%} of prompts are near duplicates of another",
            neutral=0.1,
        ),
        Feature(
            "templates.compressibility",
            "prompts are {value:.0%} predictable from the ones before (templated)",
            neutral=0.2,
        ),
        Feature(
            "templates.shared_prefix_share",
            "{value:.0%} of prompts start with the same words as another",
            neutral=0.1,
        ),
        Feature(
            "templates.shared_suffix_share",
            "{value:.0%} of prompts end with the same words as another",
            neutral=0.1,
        ),
    )

    def __init__(self) -> None:
        self.entries: deque[_Entry] = deque()
        self.next_id = 0
        self.texts = self.readable = self.saved = 0
        self.exact, self.prefixes, self.suffixes = _Twins(), _Twins(), _Twins()
        self.buckets: dict[tuple[int, bytes], set[int]] = {}
        self.shared_bands: dict[int, int] = {}  # entry id → its bands another prompt shares
        self.near = 0  # readable prompts with at least one shared band
        self.previous: deque[bytes] = deque(maxlen=ZDICT_PROMPTS)

    def add(self, request: Request) -> None:
        entry = self._entry(request)
        self.entries.append(entry)
        self.next_id += 1
        if not entry.text:
            return
        self.texts += 1
        if entry.digest is not None:
            self.exact.add(entry.digest)
            return
        self.readable += 1
        self.saved += entry.saving
        self._link(entry)
        if entry.prefix is not None:
            self.prefixes.add(entry.prefix)
            self.suffixes.add(entry.suffix)

    def evict(self, request: Request) -> None:
        entry = self.entries.popleft()
        if not entry.text:
            return
        self.texts -= 1
        if entry.digest is not None:
            self.exact.remove(entry.digest)
            return
        self.readable -= 1
        self.saved -= entry.saving
        self._unlink(entry)
        if entry.prefix is not None:
            self.prefixes.remove(entry.prefix)
            self.suffixes.remove(entry.suffix)

    def values(self) -> dict[str, float]:
        out = {f.name: f.neutral for f in self.features}
        if self.texts >= MIN_REQUESTS:
            out["templates.near_duplicate_share"] = (self.near + self.exact.shared) / self.texts
        if self.readable >= MIN_REQUESTS:
            n = self.readable
            out["templates.compressibility"] = self.saved / PPM / n
            out["templates.shared_prefix_share"] = self.prefixes.shared / n
            out["templates.shared_suffix_share"] = self.suffixes.shared / n
        return out

    def fingerprints(self, min_count: int = 3) -> set[str]:
        """Stable hashes (``p:``/``s:``/``x:`` + 16 hex) of the prefix, suffix and (hashed
        bodies) whole-prompt keys that at least ``min_count`` prompts in the window share."""
        return {
            *(_fingerprint("p", k) for k in self.prefixes.repeated(min_count)),
            *(_fingerprint("s", k) for k in self.suffixes.repeated(min_count)),
            *(_fingerprint("x", k) for k in self.exact.repeated(min_count)),
        }

    def _entry(self, request: Request) -> _Entry:
        text = request.text
        if not text:
            return _Entry(self.next_id)
        if request.hashed:
            return _Entry(self.next_id, text=True, digest=text.encode())
        data = text[:MAX_CHARS].encode()
        words = data.lower().split()
        if not words:
            return _Entry(self.next_id)
        # a long prompt's own last words, not those where reading stopped
        tail = text[-400:].lower().encode().split() if len(text) > MAX_CHARS else words
        saved = saving(data, b"".join(self.previous))
        self.previous.append(data)
        keyed = len(words) >= MIN_KEY_WORDS
        return _Entry(
            self.next_id,
            text=True,
            bands=bands(signature(words)),
            prefix=b" ".join(words[:KEY_WORDS]) if keyed else None,
            suffix=b" ".join(tail[-KEY_WORDS:]) if keyed else None,
            saving=saved,
        )

    def _link(self, entry: _Entry) -> None:
        mine = 0
        for band in entry.bands:
            members = self.buckets.setdefault(band, set())
            if members:
                mine += 1
                if len(members) == 1:  # the bucket's first member now has a twin too
                    self._bump(next(iter(members)), +1)
            members.add(entry.id)
        self.shared_bands[entry.id] = mine
        self.near += mine > 0

    def _unlink(self, entry: _Entry) -> None:
        for band in entry.bands:
            members = self.buckets[band]
            members.discard(entry.id)
            if len(members) == 1:  # the one left has lost its twin in this band
                self._bump(next(iter(members)), -1)
            elif not members:
                del self.buckets[band]
        self.near -= self.shared_bands.pop(entry.id) > 0

    def _bump(self, entry_id: int, change: int) -> None:
        before = self.shared_bands[entry_id]
        after = before + change
        self.shared_bands[entry_id] = after
        self.near += (after > 0) - (before > 0)
