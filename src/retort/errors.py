"""Typed errors. The CLI prints a RetortError as one line and exits 2, with no traceback.

Messages say what went wrong, where (file, line, key or flag) and how to fix it, e.g.
``prompts.jsonl:17: record has neither "prompt" nor "messages"; add one of them``.
"""

from __future__ import annotations


class RetortError(Exception):
    """Base of every error a user can cause and fix."""


class InputError(RetortError):
    """A prompts file, record or data file is missing or malformed."""


class ConfigError(RetortError):
    """A recipe, flag or override is unknown or out of range."""


class ModelError(RetortError):
    """A model spec cannot be loaded, pruned or paired with another model."""


class StoreError(RetortError):
    """A store is unreadable or was made with a different fingerprint."""


class TeacherError(RetortError):
    """A teacher cannot do what the run asks of it."""
