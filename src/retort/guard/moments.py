"""Moments given on the command line: a duration away from now (``7d``, ``12h``, ``90m``,
``30s``), an ISO date/time (UTC unless it names a zone), or, where allowed, unix seconds."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from retort.errors import ConfigError

SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_moment(
    text: str, flag: str, *, ago: bool, unix_seconds: bool = False, now: float | None = None
) -> float:
    """Unix seconds of ``text``; a duration counts back from ``now`` when ``ago``, else forward.

    Raises:
        ConfigError: naming ``flag`` and the forms it takes.
    """
    now = time.time() if now is None else now
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        span = float(match.group(1)) * SECONDS[match.group(2)]
        return now - span if ago else now + span
    if unix_seconds:
        try:
            return float(text)
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        forms = "a duration (7d, 12h, 90m), an ISO date" + (
            " or unix seconds" if unix_seconds else ""
        )
        raise ConfigError(f"{flag}: '{text}' is not {forms}") from exc
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
