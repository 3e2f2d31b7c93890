"""--since and --expires: durations, ISO dates, unix seconds, and one-line errors."""

from __future__ import annotations

import pytest

from retort.errors import ConfigError
from retort.guard.export import parse_since
from retort.guard.keys import parse_expiry


def test_durations_count_back_for_since_and_forward_for_expires():
    assert parse_since("1h", now=10_000.0) == 10_000.0 - 3600
    assert parse_expiry("30d", now=0.0) == 30 * 86400
    assert parse_since("1970-01-02", now=0.0) == 86400  # UTC when no zone is given
    assert parse_since("1234.5") == 1234.5  # unix seconds: --since only


@pytest.mark.parametrize(("parse", "flag"), [(parse_since, "--since"), (parse_expiry, "--expires")])
def test_a_bad_moment_is_one_line_naming_the_flag(parse, flag):
    with pytest.raises(ConfigError, match=f"^{flag}: 'soon' is not a duration"):
        parse("soon")
    with pytest.raises(ConfigError, match=flag):
        parse_expiry("1234.5") if flag == "--expires" else parse("yesterday")
