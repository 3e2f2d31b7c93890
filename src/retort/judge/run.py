"""``retort judge``: answers from models A and B, judged by a third, resumable.

The work, in three resumable stages under the output folder:

1. ``answers.jsonl``: each model's answer to each prompt (generated greedily, or read from
   ``--answers-a``/``--answers-b``), one record per (prompt id, side).
2. ``judgments.jsonl``: one record per (prompt id, kind), kind ``ab`` / ``ba`` (the pairwise
   judgment with A's answer shown first / B's shown first) and, for a prompt with a
   ``reference``, ``grade_a`` / ``grade_b`` (each answer graded against it). A record keeps
   every attempt's raw reply: an unparsable reply is re-asked (the reply, then a reminder of
   the format, in the same conversation) up to ``retries`` times, and stays unparsable after.
3. ``judge.json``: the summary (``retort.judge.summary``), written whole and renamed into place.

``run.json`` holds the settings that decide the results (models, judge, prompt templates,
lengths); a resume with other settings is refused rather than mixed in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retort.capture.prompts import PromptRecord
from retort.errors import ConfigError, StoreError
from retort.judge.answers import GivenAnswers
from retort.judge.backends import ChatModel
from retort.judge.journal import Journal
from retort.judge.stats import winner
from retort.judge.summary import summarize, write_summary
from retort.judge.templates import Template, load_template
from retort.judge.verdicts import parse_grade, parse_pairwise
from retort.progress import Progress, Silent

ORDERS = ("ab", "ba")
GRADES = {"grade_a": "a", "grade_b": "b"}
REASK = {
    "pairwise": "I could not find your verdict. Reply with exactly one of [[A]] (assistant A is "
    "better), [[B]] (assistant B is better) or [[C]] (a tie).",
    "grade": "I could not find your verdict. Reply with exactly one of [[CORRECT]] or "
    "[[INCORRECT]].",
}


@dataclass(frozen=True)
class JudgeSettings:
    """How long answers and judgments may be, how often an unparsable one is re-asked, and
    how many conversations go to a model at once."""

    max_answer_tokens: int = 256
    max_judge_tokens: int = 256
    retries: int = 2
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("max_answer_tokens", "max_judge_tokens", "batch_size"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {getattr(self, name)}: must be at least 1")
        if self.retries < 0:
            raise ConfigError(f"--retries {self.retries}: must be 0 or more")


Answerer = ChatModel | GivenAnswers


def judge(
    records: list[PromptRecord],
    a: Answerer,
    b: Answerer,
    judge_model: ChatModel,
    out: Path,
    settings: JudgeSettings | None = None,
    *,
    pairwise: Template | None = None,
    grade: Template | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Answer, judge both orders (and grade against references), summarize into judge.json.

    Returns:
        The summary written to ``out/judge.json`` (see ``retort.judge.summary``).
    """
    settings = settings or JudgeSettings()
    pairwise = pairwise or load_template("pairwise")
    grade = grade or load_template("grade")
    progress = progress or Silent()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, _fingerprint(a, b, judge_model, pairwise, grade, settings))

    answers = Journal(out / "answers.jsonl", ("id", "side"))
    for side, source in (("a", a), ("b", b)):
        _collect_answers(records, side, source, answers, settings, progress)
    answer = {(r["id"], r["side"]): r["answer"] for r in answers}

    judgments = Journal(out / "judgments.jsonl", ("id", "kind"))
    tasks = [
        (record, kind)
        for record in records
        for kind in (*ORDERS, *(GRADES if record.reference else ()))
        if (record.id, kind) not in judgments
    ]
    progress.start("judging", total=len(tasks), unit="judgments")
    unparsable = 0
    try:
        for start in range(0, len(tasks), settings.batch_size):
            batch = tasks[start : start + settings.batch_size]
            prompts = [_judge_prompt(r, kind, answer, pairwise, grade) for r, kind in batch]
            results = _judge_batch(judge_model, prompts, [k for _, k in batch], settings)
            for (record, kind), (label, attempts) in zip(batch, results, strict=True):
                entry: dict[str, Any] = {"id": record.id, "kind": kind, "verdict": label}
                if kind in ORDERS:
                    entry["winner"] = winner(kind, label)
                entry["attempts"] = attempts
                judgments.append(entry)
                unparsable += label is None
            progress.advance(len(batch), unparsable=unparsable)
    finally:
        progress.finish()

    report = summarize(
        records,
        answer,
        judgments,
        judge=judge_model.name,
        a=a.name,
        b=b.name,
        judge_prompt_sha256=pairwise.sha256,
    )
    write_summary(out, report)
    return report


def _collect_answers(
    records: list[PromptRecord],
    side: str,
    source: Answerer,
    answers: Journal,
    settings: JudgeSettings,
    progress: Progress,
) -> None:
    """Append the answers of ``side`` that ``answers`` lacks: from the file, or generated."""
    missing = [r for r in records if (r.id, side) not in answers]
    if isinstance(source, GivenAnswers):
        for record in missing:
            if record.id not in source.by_id:
                raise ConfigError(
                    f"--answers-{side} {source.path}: no answer for prompt '{record.id}' "
                    f"({record.where}); add it or drop the prompt"
                )
            answers.append({"id": record.id, "side": side, "answer": source.by_id[record.id]})
        return
    progress.start(f"answers {side}", total=len(missing), unit="prompts")
    try:
        for start in range(0, len(missing), settings.batch_size):
            batch = missing[start : start + settings.batch_size]
            texts = source.reply([_conversation(r) for r in batch], settings.max_answer_tokens)
            for record, text in zip(batch, texts, strict=True):
                answers.append({"id": record.id, "side": side, "answer": text})
            progress.advance(len(batch))
    finally:
        progress.finish()


def _judge_batch(
    judge_model: ChatModel, prompts: list[str], kinds: list[str], settings: JudgeSettings
) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """Each prompt's verdict (None: unparsable after every retry) and all its attempts."""
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    attempts: list[list[dict[str, Any]]] = [[] for _ in prompts]
    labels: list[str | None] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt in range(1 + settings.retries):
        replies = judge_model.reply(
            [conversations[i] for i in pending], settings.max_judge_tokens, seed=attempt
        )
        still = []
        for i, reply in zip(pending, replies, strict=True):
            family = "pairwise" if kinds[i] in ORDERS else "grade"
            verdict = (parse_pairwise if family == "pairwise" else parse_grade)(reply)
            attempts[i].append({"reply": reply, "verdict": verdict.label, "reason": verdict.reason})
            if verdict.parsed:
                labels[i] = verdict.label
            else:  # re-ask in the same conversation: its reply, then the format again
                conversations[i] = [
                    *conversations[i],
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": REASK[family]},
                ]
                still.append(i)
        pending = still
        if not pending:
            break
    return list(zip(labels, attempts, strict=True))


def _judge_prompt(
    record: PromptRecord,
    kind: str,
    answer: dict[tuple[str, str], str],
    pairwise: Template,
    grade: Template,
) -> str:
    question = question_text(record)
    key = record.id or ""
    if kind == "ab":
        return pairwise.render(
            question=question, answer_a=answer[key, "a"], answer_b=answer[key, "b"]
        )
    if kind == "ba":  # B's answer in the first position, as "assistant A"
        return pairwise.render(
            question=question, answer_a=answer[key, "b"], answer_b=answer[key, "a"]
        )
    return grade.render(
        question=question, reference=record.reference or "", answer=answer[key, GRADES[kind]]
    )


def question_text(record: PromptRecord) -> str:
    """What the judge is shown as the question: the prompt, or the chat turns as lines."""
    if record.messages is None:
        return record.prompt or ""
    return "\n".join(f"{t['role']}: {t['content']}" for t in record.messages)


def _conversation(record: PromptRecord) -> list[dict[str, Any]]:
    from retort.teachers.chat import chat_messages

    return chat_messages(record.prompt, record.messages, record.system)


def _fingerprint(
    a: Answerer,
    b: Answerer,
    judge_model: ChatModel,
    pairwise: Template,
    grade: Template,
    settings: JudgeSettings,
) -> dict[str, Any]:
    """What decides a run's answers and verdicts (retries and batch size do not)."""
    lengths = asdict(settings)
    return {
        "judge": judge_model.name,
        "a": a.name,
        "a_answers_sha256": getattr(a, "sha256", None),
        "b": b.name,
        "b_answers_sha256": getattr(b, "sha256", None),
        "judge_prompt_sha256": pairwise.sha256,
        "grade_prompt_sha256": grade.sha256,
        "max_answer_tokens": lengths["max_answer_tokens"],
        "max_judge_tokens": lengths["max_judge_tokens"],
    }


def _check_settings(out: Path, fingerprint: dict[str, Any]) -> None:
    path = out / "run.json"
    if path.exists():
        saved = json.loads(path.read_text())
        differs = [k for k in fingerprint if saved.get(k) != fingerprint[k]]
        if differs:
            key = differs[0]
            raise StoreError(
                f"{path}: this folder was judged with other settings ({key}: "
                f"{saved.get(key)!r}, now {fingerprint[key]!r}); use another --out, or the "
                "same settings to resume"
            )
        return
    partial = out / ".run.json.partial"
    partial.write_text(json.dumps(fingerprint, indent=2) + "\n")
    partial.replace(path)
