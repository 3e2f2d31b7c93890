"""Loading from the Hugging Face hub without hanging offline.

Without a network, ``from_pretrained`` on a hub id retries with exponential backoff for close
to a minute and logs every retry. A user with no network (or ``HF_HUB_OFFLINE=1``) should hear
at once that the model is not in the local cache; so the hub is probed once, briefly, and when it
cannot be reached the load reads the local cache only: one attempt, one clear line.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

from retort.errors import ModelError

PROBE_SECONDS = 1.5  # the whole probe, name lookup included
_TRUE = {"1", "true", "yes", "on"}


def offline_by_setting() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    values = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return any((v or "").strip().lower() in _TRUE for v in values)


@functools.cache
def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co) opens
    within ``timeout`` seconds. The name lookup runs in a thread so it cannot stall either."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    reached = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                reached.set()
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return reached.is_set()


def load_from_hub(factory: Any, repo_id: str, **kwargs: Any) -> Any:
    """``factory.from_pretrained(repo_id)``: from the hub when it is reachable (one attempt,
    retries not logged), else from the local cache only."""
    offline = offline_by_setting() or not hub_reachable()
    try:
        with _hub_warnings_muted():
            return factory.from_pretrained(repo_id, local_files_only=offline, **kwargs)
    except (OSError, ValueError) as exc:
        if offline:
            why = "HF_HUB_OFFLINE is set" if offline_by_setting() else "the hub is unreachable"
            raise ModelError(
                f"{repo_id}: no such local folder, and not in the Hugging Face cache ({why}); "
                f"give a local folder, or download it where there is a network "
                f"(hf download {repo_id})"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{repo_id}: no such local folder, and the hub cannot load it: {first}"
        ) from None


@contextmanager
def _hub_warnings_muted() -> Iterator[None]:
    """huggingface_hub logs one warning line per retry; the error raised says what failed."""
    logger = logging.getLogger("huggingface_hub")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)
