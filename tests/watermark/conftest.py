"""Keys with fixed secrets, so a statistical test sees the same draws on every run."""

from __future__ import annotations

import dataclasses
import hashlib

from retort.watermark.keys import Key, new_key


def make_key(scheme: str = "kgw", seed: int = 0, **settings) -> Key:
    """``new_key(scheme, **settings)`` with secrets derived from ``seed`` instead of the OS."""
    key = new_key(scheme, **settings)
    secrets = tuple(
        hashlib.sha256(f"test-key-{seed}-{i}".encode()).digest() for i in range(len(key.secrets))
    )
    return dataclasses.replace(key, secrets=secrets)
