"""Compact storage of top-k teacher logprobs (codec ``topk-q8-v1``).

Per completion position the k (id, logprob) pairs are sorted by logprob and stored as:

- ids: varint codes; a token's code is its rank in the shard's id dictionary (ids ordered by how
  often they occur in the shard's top-k, kept in the shard's metadata), so frequent tokens take
  one byte; an id outside the dictionary is ``len(dictionary) + id``.
- logprobs: the top logprob as float16, a step as float16, and for each pair the gap to the top
  in steps (uint8, 0..255, step = the k-th gap / 255), delta-coded along the rank order (gaps
  only grow, so deltas are small and compress well).

Error bound per logprob: |decoded − true| ≤ step/2 + |top|·2⁻¹¹, step = (k-th gap)/255 rounded
up to float16 (a non-finite logprob decodes to top − 255·step). Measured on SmolLM2 top-20 data:
mean 0.006 nats. Parquet's zstd compresses the blobs further.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

NAME = "topk-q8-v1"
LEVELS = 255


def build_dictionary(rows_ids: list[list[list[int]]]) -> list[int]:
    """Token ids ordered from most to least frequent in these rows' top-k."""
    counts = Counter(i for row in rows_ids for position in row for i in position)
    return [token for token, _ in counts.most_common()]


def encode_row(
    ids: list[list[int]], logprobs: list[list[float]], dictionary: list[int]
) -> tuple[bytes, bytes]:
    """One row's (positions × k) ids and logprobs → (ids blob, logprobs blob)."""
    if not ids:
        return b"", b""
    id_array = np.asarray(ids, dtype=np.int64)  # (P, k)
    lp_array = np.asarray(logprobs, dtype=np.float64)  # (P, k)
    order = np.argsort(-np.nan_to_num(lp_array, neginf=-1e30), axis=1, kind="stable")
    id_array = np.take_along_axis(id_array, order, axis=1)
    lp_array = np.take_along_axis(lp_array, order, axis=1)

    rank = {token: r for r, token in enumerate(dictionary)}
    codes = [rank.get(int(t), len(dictionary) + int(t)) for t in id_array.ravel()]

    top = lp_array[:, :1].astype(np.float16)  # (P, 1)
    top_value = top.astype(np.float64)
    gaps = np.nan_to_num(top_value - lp_array, posinf=np.inf)
    widest = np.where(np.isfinite(gaps), gaps, 0).max(axis=1, keepdims=True)
    step = _round_up_f16(np.maximum(widest / LEVELS, 1e-7))  # (P, 1) float16
    quanta = np.clip(np.round(gaps / step.astype(np.float64)), 0, LEVELS).astype(np.int16)
    deltas = np.diff(quanta, axis=1, prepend=0).astype(np.uint8)  # ≥ 0: gaps grow with rank
    lp_blob = top.tobytes() + step.tobytes() + deltas.tobytes()
    return _varint(codes), lp_blob


def decode_row(
    id_blob: bytes, lp_blob: bytes, positions: int, k: int, dictionary: list[int]
) -> tuple[list[list[int]], list[list[float]]]:
    """Inverse of ``encode_row`` (logprobs within the documented bound)."""
    if positions == 0:
        return [], []
    codes = np.asarray(_unvarint(id_blob, positions * k), dtype=np.int64)
    table = np.asarray(dictionary, dtype=np.int64)
    known = codes < len(table)
    ids = np.where(
        known,
        table[np.minimum(codes, max(len(table) - 1, 0))] if len(table) else 0,
        codes - len(table),
    )
    top = np.frombuffer(lp_blob, dtype=np.float16, count=positions).astype(np.float64)
    step = np.frombuffer(lp_blob, dtype=np.float16, count=positions, offset=2 * positions)
    deltas = np.frombuffer(lp_blob, dtype=np.uint8, offset=4 * positions).reshape(positions, k)
    quanta = np.cumsum(deltas.astype(np.int64), axis=1)
    logprobs = top[:, None] - quanta * step.astype(np.float64)[:, None]
    return ids.reshape(positions, k).tolist(), logprobs.astype(np.float32).tolist()


def pack_dictionary(dictionary: list[int]) -> bytes:
    return _varint(dictionary)


def unpack_dictionary(blob: bytes) -> list[int]:
    return _unvarint(blob, None)


def _round_up_f16(values: np.ndarray) -> np.ndarray:
    """Float16 values no smaller than ``values`` (so LEVELS steps always reach the k-th gap)."""
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
