"""Compact storage of top-k teacher logprobs (codec ``topk-q8-v2``; ``topk-q8-v1`` still read).

Per completion position the k (id, logprob) pairs are sorted by logprob and stored as:

- ids: varint codes; a token's code is its rank in the shard's id dictionary (ids ordered by how
  often they occur in the shard's top-k, kept in the shard's metadata), so frequent tokens take
  one byte; an id outside the dictionary is ``len(dictionary) + id``.
- logprobs: the log of the mass the k pairs hold, ``log Σ p`` (float32: near 0 its spacing is
  fine enough that the tail ``1 − Σ p`` keeps its relative precision down to 1e-38), a step
  (float16), and one uint8 code per pair, delta-coded along the rank order (codes only grow,
  so deltas are small and compress well). Code c ≤ 253 is a gap of c·step below the
  position's top; 254 is a gap past ``GAP_RANGE`` nats, stored exactly (float32) in an escape
  list at the end of the blob; 255 is zero probability (``-inf``, and vLLM's -9999, which is
  how it writes ``-inf``).

Decoding rebuilds the gaps and then scales the k probabilities to the stored mass: a decoded
row never holds more than all the mass (values are rounded down to float32), and the tail
bucket of ``losses.sparse`` keeps its true size instead of collapsing to zero on peaked rows, as
v1's independent rounding made it do. Error per logprob: |decoded − true| ≤ step, step =
(widest gap ≤ ``GAP_RANGE``)/253 rounded up to float16; about a quarter of that on average.
A position with no entries (no teacher data) is stored as k zero-probability pairs and reads
back empty.

v1 (top as float16, step, gap quanta; no tail) is decoded as it always was; its peaked rows can
hold more than all the mass, so re-capture with ``--codec q8`` to get v2.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

NAME = "topk-q8-v2"
V1 = "topk-q8-v1"
NAMES = (NAME, V1)
LEVELS = 253  # codes 0..253 are gaps; 254 and 255 are the two below
ESCAPE, ZERO = 254, 255
GAP_RANGE = 20.0  # nats below the top quantised in steps; rarer, wider gaps stored exactly
ZERO_LOGPROB = -9999.0  # at or below: zero probability (vLLM writes -inf as -9999)


def build_dictionary(rows_ids: list[list[list[int]]]) -> list[int]:
    """Token ids ordered from most to least frequent in these rows' top-k."""
    counts = Counter(i for row in rows_ids for position in row for i in position)
    return [token for token, _ in counts.most_common()]


def encode_row(
    ids: list[list[int]],
    logprobs: list[list[float]],
    dictionary: list[int],
    k: int | None = None,
) -> tuple[bytes, bytes]:
    """One row's (positions × k) ids and logprobs → (ids blob, logprobs blob).

    Positions may be empty (no teacher data); the others must all hold ``k`` pairs (default:
    the largest position). Raises ``ValueError`` on NaN logprobs or positions of other sizes.
    """
    if not ids:
        return b"", b""
    k = k or max(len(position) for position in ids)
    empty = np.array([len(position) == 0 for position in ids])  # (P,)
    if any(len(p) not in (0, k) for p in ids) or any(
        len(a) != len(b) for a, b in zip(ids, logprobs, strict=True)
    ):
        raise ValueError(f"top-k positions must all hold {k} (id, logprob) pairs, or none")
    id_array = np.asarray([p or [0] * k for p in ids], dtype=np.int64)  # (P, k)
    lp_array = np.asarray([p or [-np.inf] * k for p in logprobs], dtype=np.float64)  # (P, k)
    if np.isnan(lp_array).any():
        raise ValueError("top-k logprobs hold NaN; the teacher's output is broken")
    lp_array = np.where(lp_array <= ZERO_LOGPROB, -np.inf, lp_array)
    order = np.argsort(-lp_array, axis=1, kind="stable")
    id_array = np.take_along_axis(id_array, order, axis=1)
    lp_array = np.take_along_axis(lp_array, order, axis=1)

    rank = {token: r for r, token in enumerate(dictionary)}
    codes = np.asarray([rank.get(int(t), len(dictionary) + int(t)) for t in id_array.ravel()])
    codes.reshape(id_array.shape)[empty] = 0  # ids of an empty position are never read

    finite = np.isfinite(lp_array)
    with np.errstate(invalid="ignore"):  # -inf - -inf at all-zero positions; masked out
        gaps = np.where(finite, lp_array[:, :1] - lp_array, 0.0)  # (P, k), ≥ 0
    stepped = finite & (gaps <= GAP_RANGE)
    widest = np.where(stepped, gaps, 0.0).max(axis=1, keepdims=True)
    step = _round_up_f16(np.maximum(widest / LEVELS, 1e-7))  # (P, 1) float16
    quanta = np.clip(np.round(gaps / step.astype(np.float64)), 0, LEVELS)
    quanta = np.where(stepped, quanta, np.where(finite, ESCAPE, ZERO)).astype(np.int64)
    deltas = np.diff(quanta, axis=1, prepend=0).astype(np.uint8)  # ≥ 0: codes grow with rank
    escapes = gaps[finite & ~stepped].astype(np.float32)  # row-major: decode order

    log_mass = _log_mass(lp_array).astype(np.float32)  # (P,)
    lp_blob = log_mass.tobytes() + step.tobytes() + deltas.tobytes() + escapes.tobytes()
    return _varint(codes.tolist()), lp_blob


def decode_row(
    id_blob: bytes,
    lp_blob: bytes,
    positions: int,
    k: int,
    dictionary: list[int],
    codec: str = NAME,
) -> tuple[list[list[int]], list[list[float]]]:
    """Inverse of ``encode_row`` (logprobs within the documented bound); ``codec`` names the
    blob format, one of ``NAMES``."""
    if positions == 0:
        return [], []
    codes = np.asarray(_unvarint(id_blob, positions * k), dtype=np.int64)
    table = np.asarray(dictionary, dtype=np.int64)
    known = codes < len(table)
    ids = np.where(
        known,
        table[np.minimum(codes, max(len(table) - 1, 0))] if len(table) else 0,
        codes - len(table),
    ).reshape(positions, k)
    if codec == V1:
        return ids.tolist(), _decode_v1(lp_blob, positions, k).astype(np.float32).tolist()
    if codec != NAME:
        raise ValueError(f"unknown top-k codec {codec!r}; this retort reads {', '.join(NAMES)}")
    logprobs = _decode_v2(lp_blob, positions, k)
    empty = np.isneginf(logprobs).all(axis=1)
    id_rows, lp_rows = ids.tolist(), logprobs.tolist()
    for position in np.flatnonzero(empty):  # no teacher data here
        id_rows[position], lp_rows[position] = [], []
    return id_rows, lp_rows


def _decode_v2(lp_blob: bytes, positions: int, k: int) -> np.ndarray:
    """(P, k) float32 logprobs whose probabilities sum to the stored mass, at most 1."""
    log_mass = np.frombuffer(lp_blob, dtype=np.float32, count=positions).astype(np.float64)
    step = np.frombuffer(lp_blob, dtype=np.float16, count=positions, offset=4 * positions)
    deltas = np.frombuffer(lp_blob, dtype=np.uint8, count=positions * k, offset=6 * positions)
    quanta = np.cumsum(deltas.reshape(positions, k).astype(np.int64), axis=1)  # (P, k)
    escaped = quanta == ESCAPE
    escapes = np.frombuffer(lp_blob, dtype=np.float32, offset=6 * positions + positions * k)
    if len(escapes) != escaped.sum():
        raise ValueError(f"top-k blob holds {len(escapes)} escapes, expected {escaped.sum()}")
    gaps = quanta * step.astype(np.float64)[:, None]
    gaps[escaped] = escapes
    relative = np.where(quanta == ZERO, -np.inf, -gaps)  # (P, k): the top is 0
    # Scale the k probabilities so they hold exactly the stored mass.
    total = np.logaddexp.reduce(relative, axis=1)
    with np.errstate(invalid="ignore"):  # -inf - -inf at positions without data; masked out
        shift = np.where(np.isfinite(total), np.minimum(log_mass, 0.0) - total, 0.0)
    exact = relative + shift[:, None]
    rounded = exact.astype(np.float32)
    high = rounded.astype(np.float64) > exact  # round down: the mass can only shrink
    rounded[high] = np.nextafter(rounded[high], np.float32(-np.inf))
    return rounded


def _decode_v1(lp_blob: bytes, positions: int, k: int) -> np.ndarray:
    top = np.frombuffer(lp_blob, dtype=np.float16, count=positions).astype(np.float64)
    step = np.frombuffer(lp_blob, dtype=np.float16, count=positions, offset=2 * positions)
    deltas = np.frombuffer(lp_blob, dtype=np.uint8, offset=4 * positions).reshape(positions, k)
    quanta = np.cumsum(deltas.astype(np.int64), axis=1)
    return top[:, None] - quanta * step.astype(np.float64)[:, None]


def _log_mass(logprobs: np.ndarray) -> np.ndarray:
    """log Σ exp(logprobs) per position, at most 0 (a server's rounding can give a little more
    than all the mass: such a row is scaled to exactly all of it)."""
    return np.minimum(np.logaddexp.reduce(logprobs, axis=1), 0.0)


def pack_dictionary(dictionary: list[int]) -> bytes:
    return _varint(dictionary)


def unpack_dictionary(blob: bytes) -> list[int]:
    return _unvarint(blob, None)


def _round_up_f16(values: np.ndarray) -> np.ndarray:
    """Float16 values no smaller than ``values`` (so LEVELS steps always reach the widest gap)."""
    rounded = values.astype(np.float16)
    low = rounded.astype(np.float64) < values
    rounded[low] = np.nextafter(rounded[low], np.float16(np.inf))
    return rounded


def _varint(values: list[int]) -> bytes:
    out = bytearray()
    for value in values:
        value = int(value)
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def _unvarint(blob: bytes, count: int | None) -> list[int]:
    values, value, shift = [], 0, 0
    for byte in blob:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        values.append(value)
        value, shift = 0, 0
    if count is not None and len(values) != count:
        raise ValueError(f"top-k blob holds {len(values)} ids, expected {count}")
    return values
