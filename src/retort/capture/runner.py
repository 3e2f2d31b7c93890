"""``retort generate``: prompts → teacher → store, batched, resumable, interruptible.

Order of work: validate every prompt (no teacher call on bad input), load the teacher, open
the store under the run's fingerprint (refused on mismatch), skip ids already stored, generate
the rest in length-sorted batches, and write a shard every ``rows_per_shard`` rows. Ctrl-C
writes the rows already generated before it re-raises.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from retort.capture import http_capture
from retort.capture.http_capture import HTTPSettings
from retort.capture.prompts import PromptRecord, load_prompts
from retort.capture.store import CODEC, CODECS, ShardBuffer, Store
from retort.capture.text_rows import text_fingerprint, text_row
from retort.config import GenerateConfig, is_http_teacher
from retort.errors import ConfigError, InputError, TeacherError
from retort.models.vocab import tokenizer_hash
from retort.progress import Progress, Silent
from retort.teachers.chat import chat_messages, leading_bos, render_prompt
from retort.teachers.decoding import derive_seed
from retort.teachers.http import HTTPReply, HTTPTeacher, connect_teacher, run_sync
from retort.teachers.http_text import TextHTTPTeacher, connect_text_teacher, is_text_teacher
from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Generation, Sampling, Teacher
from retort.watermark.keys import Key, check_tokenizer, load_key


@dataclass
class GenerateResult:
    """What a generate run did."""

    store: Store
    written: int  # rows added by this run
    skipped: int  # rows that were already in the store
    failures: list[dict[str, Any]]
    seconds: float
    retries: int = 0  # HTTP: requests tried again after a retryable failure
    not_attempted: int = 0  # HTTP: prompts left for the next run by the budget
    teacher_tokens: int = 0  # HTTP: prompt + completion tokens the server reported
    cost: float = 0.0


def sampling_of(config: GenerateConfig) -> Sampling:
    return Sampling(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
    )


def fingerprint(
    teacher: Teacher, sampling: Sampling, top_k: int, mode: str = "generate", codec: str = CODEC
) -> dict[str, Any]:
    """Everything that makes two captures comparable; a store holds rows of one fingerprint.

    A watermarked teacher adds ``watermark``: its key's scheme, settings and key id (never the
    secret), so a store's text is known to be watermarked and a resume with another key (or
    none) is refused."""
    name, weights = teacher_names(teacher.identity())
    key = getattr(teacher, "watermark", None)
    marked = {"watermark": key.public()} if key is not None else {}
    return {
        "teacher": name,
        "teacher_weights": weights,
        "tokenizer_sha256": tokenizer_hash(teacher.tokenizer),
        "chat_template_sha256": _sha256(teacher.tokenizer.chat_template or ""),
        # without a template, prompts start with the tokenizer's BOS when it puts one first
        "prompt_bos": None if teacher.tokenizer.chat_template else leading_bos(teacher.tokenizer),
        "mode": mode,
        **sampling.as_dict(),
        # What decodes beyond the user's settings: retort's own exact decode for a local
        # teacher; for an HTTP teacher, whatever the server applies (only it knows).
        "decoding": getattr(teacher, "decoding", None) or sampling.as_dict()["decoding"],
        "top_k": top_k,
        "codec": codec,
        **marked,
    }


def teacher_names(identity: dict[str, Any]) -> tuple[str, str | None]:
    """A teacher identity as the fingerprint keeps it: its name, and its weights' identity."""
    rest = dict(identity)
    name = rest.pop("model")
    return name, json.dumps(rest, sort_keys=True) if rest else None


def other_teacher(store_fingerprint: dict[str, Any], identity: dict[str, Any]) -> str | None:
    """None when ``identity`` is the teacher that wrote the store, else "STORED vs GIVEN".

    Weights decide where both sides know them (one folder under two paths is one teacher);
    otherwise the names do.
    """
    name, weights = teacher_names(identity)
    stored, stored_weights = (
        store_fingerprint.get("teacher"),
        store_fingerprint.get("teacher_weights"),
    )
    if stored is None:
        return None  # a store from before teachers were recorded: nothing to compare
    same = stored_weights == weights if stored_weights and weights else stored == name
    return None if same else f"{stored} vs {name}"


def generate(
    config: GenerateConfig,
    teacher: Teacher | None = None,
    progress: Progress | None = None,
) -> GenerateResult:
    """Run a capture described by ``config``; load the teacher from ``config.teacher`` if needed."""
    progress = progress or Silent()
    sampling = sampling_of(config)
    # Every record is validated before any teacher work.
    records = load_prompts(config.prompts, sampling.as_dict(), dedup=config.dedup)
    if config.shard:
        records = select_shard(records, config.shard)
    key = _watermark_key(config)  # a bad key file fails before the teacher loads
    if teacher is None:
        teacher = load_teacher(config)
    if is_text_teacher(teacher):
        _check_text_settings(config)
    if key is not None:
        teacher = _watermarked(teacher, key)
    if config.top_k > teacher.capabilities.max_top_k:
        raise TeacherError(
            f"--top-k {config.top_k}: this teacher returns at most "
            f"{teacher.capabilities.max_top_k} logprobs per position"
        )
    # Every prompt is rendered before the store is touched: a template error is an input error.
    rendered = [(r, *_render(teacher, r), _given(teacher, r, config.mode)) for r in records]
    served = isinstance(teacher, HTTPTeacher | TextHTTPTeacher)
    if served:  # also learns the served revision the fingerprint names
        run_sync(http_capture.probe(teacher, config.top_k, score=config.mode == "score"))
    if is_text_teacher(teacher):
        made_with = text_fingerprint(teacher, sampling, config.top_k, teacher_names)
    else:
        made_with = fingerprint(teacher, sampling, config.top_k, config.mode, CODECS[config.codec])
    store = Store.create_or_resume(config.out, made_with)
    done = store.done_ids()
    todo = [item for item in rendered if item[0].id not in done]
    started = time.perf_counter()
    result = GenerateResult(store, 0, len(records) - len(todo), [], 0.0)
    progress.start("generate", total=len(todo), unit="prompts")
    try:
        if served:
            _capture_http(config, teacher, todo, sampling, store, result, progress)
        else:
            _capture_local(config, teacher, todo, sampling, store, result, progress)
    finally:
        # Interrupted or not, failures are recorded; ids attempted again replace old entries.
        attempted = {record.id for record, *_ in todo}
        kept = [f for f in store.manifest.get("failures", []) if f["id"] not in attempted]
        store.record_failures(kept + result.failures)
        result.seconds = time.perf_counter() - started
        progress.finish()
    return result


def _capture_local(
    config: GenerateConfig,
    teacher: Teacher,
    todo: list[tuple[PromptRecord, list[int], list[dict[str, Any]], list[int]]],
    sampling: Sampling,
    store: Store,
    result: GenerateResult,
    progress: Progress,
) -> None:
    """Batched in-process generation (or scoring), length-sorted, a shard every
    ``rows_per_shard`` rows."""
    shards = ShardBuffer(store, config.rows_per_shard)
    score = config.mode == "score"
    limit = getattr(teacher, "max_positions", None)
    runnable = []
    for record, prompt_ids, _, given in todo:
        needed = len(prompt_ids) + (len(given) if score else config.max_new_tokens)
        if limit and needed > limit:
            reason = f"prompt and completion need {needed} positions; the teacher has {limit}"
            result.failures.append({"id": record.id, "reason": reason, "attempts": 1})
            progress.advance(1)
        else:
            runnable.append((record, prompt_ids, given))
    runnable.sort(key=lambda item: len(item[1]) + len(item[2]))  # less padding per batch
    try:
        for start in range(0, len(runnable), config.batch_size):
            batch = runnable[start : start + config.batch_size]
            tick = time.perf_counter()
            if score:
                outputs = _score_local(teacher, [(p, g) for _, p, g in batch], config.top_k)
            else:
                prompts = [p for _, p, _ in batch]
                if isinstance(teacher, LocalTeacher):  # a row's sample is a function of its id
                    seeds = [derive_seed(sampling.seed, record.id) for record, _, _ in batch]
                    outputs = teacher.generate(prompts, sampling, config.top_k, seeds=seeds)
                else:
                    outputs = teacher.generate(prompts, sampling, config.top_k)
            latency = (time.perf_counter() - tick) * 1000 / len(batch)
            for (record, prompt_ids, _), out in zip(batch, outputs, strict=True):
                shards.add(_row(record, prompt_ids, out, teacher.tokenizer, latency))
            new_tokens = sum(len(o.completion_ids) for o in outputs)
            progress.advance(len(batch), tokens=new_tokens)
    finally:
        shards.flush()  # interrupted or not, what was generated is kept
        result.written += shards.written


def _capture_http(
    config: GenerateConfig,
    teacher: HTTPTeacher | TextHTTPTeacher,
    todo: list[tuple[PromptRecord, list[int], list[dict[str, Any]], list[int]]],
    sampling: Sampling,
    store: Store,
    result: GenerateResult,
    progress: Progress,
) -> None:
    settings = HTTPSettings(
        concurrency=config.concurrency,
        rpm=config.rpm,
        tpm=config.tpm,
        max_retries=config.max_retries,
        max_teacher_tokens=config.max_teacher_tokens,
        price_per_1k_in=config.price_per_1k_in,
        price_per_1k_out=config.price_per_1k_out,
        max_cost=config.max_cost,
    )

    def make_row(
        record: PromptRecord, prompt_ids: list[int], turns: list[dict[str, Any]], reply: Any
    ) -> dict:
        if isinstance(reply, HTTPReply):
            return _row(record, prompt_ids, reply.generation, teacher.tokenizer, 0.0)
        return text_row(record, turns, reply)

    outcome = run_sync(
        http_capture.capture(
            teacher,
            todo,
            sampling,
            config.top_k,
            store,
            settings,
            make_row,
            config.rows_per_shard,
            progress,
            score=config.mode == "score",
        )
    )
    result.written += outcome.written
    result.failures += outcome.failures
    result.retries = outcome.retries
    result.not_attempted = outcome.not_attempted
    result.teacher_tokens = outcome.prompt_tokens + outcome.completion_tokens
    result.cost = outcome.cost(settings)


def _score_local(
    teacher: Teacher, pairs: list[tuple[list[int], list[int]]], top_k: int
) -> list[Generation]:
    """Teacher-forced top-k of each given completion, as Generations."""
    scored = teacher.score([prompt + given for prompt, given in pairs], top_k)
    outputs = []
    for (prompt, given), scores in zip(pairs, scored, strict=True):
        window = slice(len(prompt) - 1, len(prompt) - 1 + len(given))  # position t scores t+1
        outputs.append(
            Generation(
                completion_ids=given,
                finish_reason="scored",
                topk_ids=scores.topk_ids[window],
                topk_logprobs=scores.topk_logprobs[window],
                token_logprobs=scores.token_logprobs[window],
            )
        )
    return outputs


def _given(teacher: Teacher, record: PromptRecord, mode: str) -> list[int]:
    """Token ids of the record's ``completion`` to score (score mode), ending the turn with EOS
    when the tokenizer has a chat template; [] in generate mode."""
    if mode != "score":
        return []
    if not record.completion:
        raise InputError(f'{record.where}: score mode needs a non-empty "completion" to score')
    tokenizer = teacher.tokenizer
    ids = tokenizer(record.completion, add_special_tokens=False)["input_ids"]
    if tokenizer.chat_template and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


def _watermark_key(config: GenerateConfig) -> Key | None:
    if config.watermark is None:
        return None
    key = load_key(config.watermark)
    if key.scheme == "gumbel" and config.temperature == 0:
        raise ConfigError(
            f"--temperature 0: {config.watermark} is a gumbel key, which samples (Gumbel-max); "
            "use --temperature 1 (the watermark keeps the teacher's distribution), or a kgw key "
            "for greedy decoding"
        )
    return key


def _watermarked(teacher: Teacher, key: Key) -> LocalTeacher:
    if not isinstance(teacher, LocalTeacher):
        raise ConfigError(
            "--watermark: only a local teacher watermarks here; a served teacher must watermark "
            "itself (retort serve --watermark KEYFILE)"
        )
    check_tokenizer(key, teacher.tokenizer, flag="the teacher's tokenizer")
    return teacher.watermarked(key)


def select_shard(records: list[PromptRecord], shard: str) -> list[PromptRecord]:
    """Records of shard ``i/n``: those whose id hashes to i mod n (stable across runs)."""
    index, count = (int(part) for part in shard.split("/"))
    return [
        r
        for r in records
        if int(hashlib.sha256((r.id or "").encode()).hexdigest()[:8], 16) % count == index
    ]


def load_teacher(config: GenerateConfig) -> Teacher:
    """A local teacher, or an HTTP one when ``config.teacher`` is an http(s) URL: a text teacher
    (no tokenizer, none loaded) for ``--endpoint chat`` without ``--tokenizer``."""
    if not is_http_teacher(config.teacher):
        return LocalTeacher.load(config.teacher)
    if config.endpoint == "chat" and config.tokenizer is None:
        return connect_text_teacher(
            config.teacher,
            config.teacher_model,
            api_key_env=config.api_key_env,
            timeout=config.timeout,
        )
    return connect_teacher(
        config.teacher,
        config.teacher_model,
        config.tokenizer,
        api_key_env=config.api_key_env,
        timeout=config.timeout,
        endpoint=config.endpoint,
    )


def _check_text_settings(config: GenerateConfig) -> None:
    """What a teacher without a tokenizer cannot do, refused before any request."""
    if config.mode == "score":
        raise ConfigError(
            "--mode score: scoring given text needs the teacher's tokenizer; give --tokenizer "
            "and --endpoint completions"
        )
    if config.codec != "plain":
        raise ConfigError(
            f"--codec {config.codec}: packs top-k token ids, and a teacher without --tokenizer "
            "has none (its top-k is stored as token strings); use --codec plain"
        )


def _render(teacher: Teacher, record: PromptRecord) -> tuple[list[int], list[dict[str, Any]]]:
    """The record's prompt ids (none for a text teacher: the server renders) and chat turns."""
    turns = chat_messages(record.prompt, record.messages, record.system)
    if is_text_teacher(teacher):
        return [], turns
    try:
        return render_prompt(teacher.tokenizer, turns), turns
    except Exception as exc:  # jinja TemplateError and kin: the template refused these turns
        raise InputError(f"{record.where}: the chat template refused this record ({exc})") from None


def _row(
    record: PromptRecord, prompt_ids: list[int], out: Any, tokenizer: Any, latency_ms: float
) -> dict[str, Any]:
    return {
        "id": record.id,
        "prompt": record.canonical(),
        "system": record.system,
        "reference": record.reference,
        "completion": tokenizer.decode(out.completion_ids, skip_special_tokens=True),
        "finish_reason": out.finish_reason,
        "prompt_token_ids": prompt_ids,
        "completion_token_ids": out.completion_ids,
        "topk_ids": out.topk_ids,
        "topk_logprobs": out.topk_logprobs,
        "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(out.completion_ids)},
        "latency_ms": latency_ms,
    }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
