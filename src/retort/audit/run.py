"""``retort audit`` as one call: settings in, the suspect resolved and read or sampled, a result
out. The CLI parses flags into :class:`AuditSettings` and prints; everything else is here.

Modes: ``reading`` (a local suspect teacher-forced on ``texts`` or ``prompts``: the default for
local specs), ``api`` (a served suspect sampled on ``prompts``: the default for URLs) and
``sample`` (a local suspect sampled on ``prompts``, no watermark processors). Settings are
checked in the order a user would fix them: key files first, then the flags of the mode, then
the suspect and tokenizer specs, before any model loads or any request is sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retort.audit.pairs import KGram, kgrams
from retort.audit.reading import DEFAULT_FREQUENT, MAX_LENGTH, audit_reading
from retort.audit.result import AuditResult
from retort.audit.sampling import audit_api, audit_sampled
from retort.audit.scoring import check_keys
from retort.config import is_http_teacher
from retort.errors import ConfigError, InputError, RetortError
from retort.progress import Progress
from retort.watermark.keys import load_key

MODES = ("reading", "api", "sample")


@dataclass
class AuditSettings:
    """What ``retort audit`` was asked (one field per flag; see ``retort audit --help``)."""

    suspect: str
    keys: list[Path]
    mode: str | None = None  # default: api for a URL, reading for a local model
    texts: Path | None = None
    prompts: Path | None = None
    suspect_model: str | None = None
    tokenizer: str | None = None
    frequent: int = DEFAULT_FREQUENT
    exclude_kgrams: Path | None = None
    max_length: int = MAX_LENGTH
    batch_size: int = 8
    null_keys: int = 0
    null_seed: int | None = None
    store: Path | None = None
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    endpoint: str = "completions"
    top_k: int = 1
    concurrency: int = 8
    rpm: int | None = None
    max_retries: int = 5
    timeout: float = 120.0
    api_key_env: str = "OPENAI_API_KEY"


def run_audit(settings: AuditSettings, progress: Progress | None = None) -> AuditResult:
    """Run the audit ``settings`` describe.

    Raises:
        ConfigError: a bad key file, flag or spec (one line naming it and the fix).
        InputError: a missing or malformed texts or prompts file.
        TeacherError: a served suspect that cannot be reached or refuses the requests.
    """
    keys = [load_key(path) for path in settings.keys]  # a bad key file fails first
    history = check_keys(keys)
    mode = _mode(settings)
    if settings.null_keys < 0:
        raise ConfigError(f"--null-keys {settings.null_keys}: a number of random keys >= 0")
    sampling = {
        "max_new_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "seed": settings.seed,
        "batch_size": settings.batch_size,
    }
    common: dict[str, Any] = {"null_keys": settings.null_keys, "null_seed": settings.null_seed}
    if mode == "api":
        tokenizer = _tokenizer(settings.tokenizer, "--tokenizer")
        http = {
            "concurrency": settings.concurrency,
            "rpm": settings.rpm,
            "max_retries": settings.max_retries,
        }
        return audit_api(
            settings.suspect,
            settings.suspect_model or "",
            tokenizer,
            settings.prompts,  # type: ignore[arg-type]  (checked in _mode)
            keys,
            api_key=os.environ.get(settings.api_key_env),
            endpoint=settings.endpoint,
            top_k=settings.top_k,
            timeout=settings.timeout,
            store=settings.store,
            generate={**sampling, **http},
            exclude=_listed(settings, tokenizer, history),
            progress=progress,
            **common,
        )
    given = _tokenizer(settings.tokenizer, "--tokenizer") if settings.tokenizer else None
    teacher = _local_suspect(settings.suspect)
    if mode == "sample":
        tokenizer = given if given is not None else teacher.tokenizer
        return audit_sampled(
            teacher,
            settings.prompts,  # type: ignore[arg-type]
            keys,
            tokenizer=tokenizer,
            suspect=settings.suspect,
            store=settings.store,
            generate=sampling,
            exclude=_listed(settings, tokenizer, history),
            progress=progress,
            **common,
        )
    tokenizer = teacher.tokenizer
    if given is not None and _hash(given) != _hash(tokenizer):
        raise ConfigError(
            f"--tokenizer {settings.tokenizer}: reading mode scores the suspect's own ids, and "
            "its tokenizer is another; drop --tokenizer (the suspect's must be the key's)"
        )
    return audit_reading(
        teacher.model,
        tokenizer,
        _corpus(settings, tokenizer),
        keys,
        suspect=settings.suspect,
        frequent=settings.frequent,
        exclude=_listed(settings, tokenizer, history),
        max_length=settings.max_length,
        batch_size=settings.batch_size,
        progress=progress,
        **common,
    )


def _mode(settings: AuditSettings) -> str:
    """The mode, checked against the suspect and the flags it needs."""
    served = is_http_teacher(settings.suspect)
    mode = settings.mode or ("api" if served else "reading")
    if mode not in MODES:
        raise ConfigError(f"--mode {mode}: one of {', '.join(MODES)}")
    if mode == "api" and not served:
        raise ConfigError(
            f"--mode api: --suspect {settings.suspect} is not an http(s)://HOST/v1 URL; "
            "for a local model use --mode reading or --mode sample"
        )
    if mode != "api" and served:
        raise ConfigError(
            f"--mode {mode}: a served suspect has no weights here to {mode} with; use --mode api"
        )
    if mode == "api":
        if not settings.suspect_model:
            raise ConfigError(
                f"--suspect {settings.suspect}: name the served model with --suspect-model"
            )
        if not settings.tokenizer:
            raise ConfigError(
                "--tokenizer: API mode needs the tokenizer the key watermarks (folder, hub id "
                "or alias); the suspect's text is scored in its ids"
            )
    if mode == "reading" and settings.texts is None and settings.prompts is None:
        raise ConfigError(
            "--texts: reading mode needs text for the suspect to read; give --texts FILE "
            '(JSONL of {"text": ...} records, or a store) or --prompts FILE'
        )
    if mode != "reading" and settings.prompts is None:
        raise ConfigError(f"--prompts: {mode} mode samples the suspect on prompts; give a file")
    return mode


def _tokenizer(spec: str | None, flag: str) -> Any:
    from retort.models.loading import load_tokenizer, resolve

    try:
        return load_tokenizer(resolve(spec or ""))
    except RetortError as exc:
        raise ConfigError(f"{flag} {spec}: {exc}") from None


def _local_suspect(spec: str) -> Any:
    from retort.teachers.local import LocalTeacher

    try:
        return LocalTeacher.load(spec)
    except RetortError as exc:
        raise ConfigError(f"--suspect {exc}") from None


def _corpus(settings: AuditSettings, tokenizer: Any) -> list[list[int]]:
    """The ids the suspect reads: each text (a store row: its prompt, then its completion),
    then each prompt as the suspect's chat template renders it."""
    from retort.watermark.texts import read_texts

    sequences = []
    if settings.texts is not None:
        sequences += [t.context + t.token_ids for t in read_texts(settings.texts, tokenizer)]
    if settings.prompts is not None:
        from retort.capture.prompts import load_prompts
        from retort.teachers.chat import chat_messages, render_prompt

        for record in load_prompts(settings.prompts, dedup=True):
            turns = chat_messages(record.prompt, record.messages, record.system)
            try:
                sequences.append(render_prompt(tokenizer, turns))
            except Exception as exc:  # jinja's TemplateError and kin
                raise InputError(f"{record.where}: the chat template refused it ({exc})") from None
    return sequences


def _listed(settings: AuditSettings, tokenizer: Any, history: int) -> set[KGram]:
    """Every k-gram of the ``--exclude-kgrams`` texts (none without the flag)."""
    if settings.exclude_kgrams is None:
        return set()
    from retort.watermark.texts import read_texts

    grams: set[KGram] = set()
    for text in read_texts(settings.exclude_kgrams, tokenizer):
        grams |= kgrams(text.context + text.token_ids, history + 1)
    return grams


def _hash(tokenizer: Any) -> str:
    from retort.models.vocab import tokenizer_hash

    return tokenizer_hash(tokenizer)
