"""API and sampling modes: sample the suspect on prompts, test its pooled outputs for the key.

A suspect behind an API shows only what it writes. Its completions are captured with retort's
own ``generate`` (an HTTP teacher: concurrency, rate limits, retries and resume; or a local
model, sampled without any watermark processor) into a store, a temporary one unless the caller
names one (then a rerun resumes, and only missing prompts are sampled). The completions are
then pooled: every (context, token) pair of every completion is scored once, as
``detect_pooled`` scores them, with the prompt's ids as context for the first tokens, and with
pairs whose k-gram occurs in the completion's own prompt left out (a suspect that copies a
watermarked prompt is not evidence).

Token ids: an HTTP suspect's tokens are mapped to the key's tokenizer (exactly, as ids, where
the server returns them: ``top_k`` >= 1 asks for logprobs, which vLLM and ``retort serve``
return as ``token_id:N``; else through the text). A local suspect with another tokenizer has its
completions' text re-encoded with the key's (the first h tokens then have no context).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from retort.audit.pairs import KGram, PairCollector
from retort.audit.result import AuditResult, verdict
from retort.audit.scoring import check_keys
from retort.errors import ConfigError, TeacherError
from retort.progress import Progress
from retort.watermark.keys import Key, check_tokenizer

SAMPLING = {"max_new_tokens": 128, "temperature": 1.0, "top_p": 1.0, "seed": 0}


def audit_api(
    url: str,
    model_name: str,
    tokenizer: Any,
    prompts: Path,
    keys: Sequence[Key],
    *,
    api_key: str | None = None,
    endpoint: str = "completions",
    top_k: int = 1,
    timeout: float = 120.0,
    store: Path | None = None,
    generate: Mapping[str, Any] | None = None,
    exclude: Iterable[KGram] = (),
    null_keys: int = 0,
    null_seed: int | None = None,
    progress: Progress | None = None,
) -> AuditResult:
    """Audit a served suspect (any OpenAI-compatible ``/v1`` URL) from its samples.

    Args:
        url, model_name: the server and the model's name on it.
        tokenizer: the keys' tokenizer; returned tokens are mapped to its ids.
        prompts: a prompts file (``retort generate``'s format).
        api_key: sent as a bearer token.
        endpoint: ``completions`` (token ids in: the suspect must share the tokenizer) or
            ``chat`` (messages in: any server).
        top_k: logprobs asked for, so tokens come back as exact ids; 0 for servers without
            logprobs (the text is then re-tokenized).
        store: keep the samples here (resumable); default a temporary store.
        generate: further ``GenerateConfig`` settings (``max_new_tokens``, ``temperature``,
            ``concurrency``, ``rpm``, ``max_retries``, ...); defaults in ``SAMPLING``.
        exclude, null_keys, null_seed, progress: as in ``audit_reading``.
    """
    from retort.teachers.http import HTTPTeacher

    for key in keys:
        check_tokenizer(key, tokenizer, flag="--tokenizer")
    # A seed per prompt: one shared random stream would correlate the samples the audit pools.
    teacher = HTTPTeacher(
        url,
        model_name,
        tokenizer,
        api_key=api_key,
        endpoint=endpoint,
        timeout=timeout,
        seed_per_prompt=True,
    )
    settings = {**(generate or {}), "top_k": top_k, "endpoint": endpoint, "timeout": timeout}
    return _audit_samples(
        "api",
        f"{url}#{model_name}",
        teacher,
        tokenizer,
        prompts,
        keys,
        store=store,
        settings=settings,
        exclude=exclude,
        null_keys=null_keys,
        null_seed=null_seed,
        progress=progress,
    )


def audit_sampled(
    teacher: Any,
    prompts: Path,
    keys: Sequence[Key],
    *,
    tokenizer: Any = None,
    suspect: str | None = None,
    store: Path | None = None,
    generate: Mapping[str, Any] | None = None,
    exclude: Iterable[KGram] = (),
    null_keys: int = 0,
    null_seed: int | None = None,
    progress: Progress | None = None,
) -> AuditResult:
    """Audit a local suspect (a ``LocalTeacher``) from its samples, as if it were served.

    Args:
        teacher: the suspect, unwatermarked (``LocalTeacher.load(spec)``).
        tokenizer: the keys' tokenizer (default: the suspect's).
        suspect: a name for the report (default: the teacher's identity).
        store, generate, exclude, null_keys, null_seed, progress: as in :func:`audit_api`.

    Raises:
        ConfigError: a suspect that watermarks its own output (its samples would carry the
            key because of that, not because of its training).
    """
    if getattr(teacher, "watermark", None) is not None:
        raise ConfigError(
            "--suspect: this suspect watermarks what it writes; audit the model itself, "
            "without --watermark"
        )
    tokenizer = tokenizer if tokenizer is not None else teacher.tokenizer
    for key in keys:
        check_tokenizer(key, tokenizer, flag="--tokenizer")
    name = suspect or str(teacher.identity().get("model"))
    settings = {**(generate or {}), "top_k": 0}
    return _audit_samples(
        "sample",
        name,
        teacher,
        tokenizer,
        prompts,
        keys,
        store=store,
        settings=settings,
        exclude=exclude,
        null_keys=null_keys,
        null_seed=null_seed,
        progress=progress,
    )


def _audit_samples(
    mode: str,
    suspect: str,
    teacher: Any,
    tokenizer: Any,
    prompts: Path,
    keys: Sequence[Key],
    *,
    store: Path | None,
    settings: dict[str, Any],
    exclude: Iterable[KGram],
    null_keys: int,
    null_seed: int | None,
    progress: Progress | None,
) -> AuditResult:
    history = check_keys(keys)
    settings = {**SAMPLING, **settings}
    if store is not None:
        samples = _sample(teacher, prompts, Path(store), settings, progress)
    else:
        with tempfile.TemporaryDirectory(prefix="retort-audit-") as folder:
            samples = _sample(teacher, prompts, Path(folder) / "store", settings, progress)
    collector = PairCollector(history, listed=exclude)
    for prompt, completion in _token_ids(samples, tokenizer):
        collector.add_sample(prompt, completion)
    record = {**settings, "store": str(store) if store else None, "null_seed": null_seed}
    record["failed"] = len(samples["failures"])
    return verdict(
        mode,
        suspect,
        collector.result,
        list(keys),
        null_trials=null_keys,
        null_seed=null_seed,
        settings=record,
    )


def _sample(
    teacher: Any, prompts: Path, store: Path, settings: dict[str, Any], progress: Progress | None
) -> dict[str, Any]:
    """Capture the suspect's completions into ``store`` with ``retort generate``; the rows,
    the store's tokenizer hash and the failures of this run."""
    from retort.capture.runner import generate
    from retort.capture.store import Store
    from retort.config import GenerateConfig, build

    spec = getattr(teacher, "base_url", None) or str(teacher.identity().get("model"))
    values = {"teacher": spec, "prompts": Path(prompts), "out": store, **settings}
    config = build(GenerateConfig, values, "retort audit")
    try:
        result = generate(config, teacher=teacher, progress=progress)
    except TeacherError as exc:  # the capture names its own flag; the audit's is --suspect-model
        raise TeacherError(str(exc).replace("--teacher-model", "--suspect-model")) from None
    table = Store.open(store).read_table(["prompt_token_ids", "completion_token_ids", "completion"])
    rows = table.to_pylist()
    if not rows:
        first = result.failures[0]["reason"] if result.failures else "no prompts were sampled"
        raise TeacherError(
            f"--suspect: no completions from the suspect ({len(result.failures)} failed; "
            f"first: {first})"
        )
    return {
        "rows": rows,
        "tokenizer_sha256": result.store.fingerprint.get("tokenizer_sha256"),
        "failures": result.failures,
    }


def _token_ids(samples: dict[str, Any], tokenizer: Any) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) in the keys' tokenizer: as stored when the store's
    tokenizer is it, else the completion's text re-encoded (and no prompt context)."""
    from retort.models.vocab import tokenizer_hash

    if samples["tokenizer_sha256"] == tokenizer_hash(tokenizer):
        return [(r["prompt_token_ids"], r["completion_token_ids"]) for r in samples["rows"]]
    return [
        ([], tokenizer(r["completion"] or "", add_special_tokens=False)["input_ids"])
        for r in samples["rows"]
    ]
