"""The judge prompts: package files a user can replace with their own.

A template is plain text with ``{name}`` placeholders. Filling is one pass over the template,
so an answer that itself contains ``{answer_b}`` is pasted as text, never filled in again;
braces that are not one of the template's placeholders stay as they are.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from retort.errors import ConfigError

# What each kind of judgment fills in, and the flag that replaces its built-in prompt.
FIELDS = {
    "pairwise": ("question", "answer_a", "answer_b"),
    "grade": ("question", "reference", "answer"),
}
FLAGS = {"pairwise": "--judge-prompt", "grade": "--grade-prompt"}


@dataclass(frozen=True)
class Template:
    """One judge prompt: its text, the placeholders it fills and where it came from."""

    kind: str
    text: str
    source: str

    @property
    def sha256(self) -> str:
        """sha256 of the template text: which judge prompt a run used."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, **values: str) -> str:
        """The prompt with every placeholder replaced by its value (one pass)."""
        fields = FIELDS[self.kind]
        missing = set(fields) - set(values)
        if missing:
            raise ValueError(f"values missing for {sorted(missing)}")
        pattern = re.compile(r"\{(" + "|".join(fields) + r")\}")
        return pattern.sub(lambda m: values[m.group(1)], self.text)


def load_template(kind: str, path: Path | None = None) -> Template:
    """The built-in ``kind`` prompt (``pairwise`` or ``grade``), or the user's file ``path``.

    Raises:
        ConfigError: the file is missing, not UTF-8, or lacks a placeholder its kind needs.
    """
    if path is None:
        text = resources.files("retort.judge").joinpath(f"prompts/{kind}.txt").read_text()
        return Template(kind, text, f"built-in {kind}.txt")
    flag = FLAGS[kind]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{flag} {path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {path}: not UTF-8 text; save it as UTF-8") from None
    needed = FIELDS[kind]
    for field in needed:
        if "{" + field + "}" not in text:
            listed = ", ".join("{" + f + "}" for f in needed)
            raise ConfigError(
                f"{flag} {path}: the template has no {{{field}}} placeholder; "
                f"a {kind} prompt needs {listed}"
            )
    return Template(kind, text, str(path))
