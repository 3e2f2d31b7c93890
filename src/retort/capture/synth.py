"""``retort synth``: the teacher writes new prompts from a few seed tasks (self-instruct).

Each round shows the teacher a few tasks (mostly seeds, some already synthesized) and asks for
one new task; answers are cleaned to one line, kept if they read as a request (see
``is_request``: small teachers often write about the instruction instead of following it, "The
task is to create a new task that differs from the previous ones.") and are not near-duplicates
(word n-gram overlap) of a seed or of a task already kept. Rounds run through
``retort generate`` (so local and HTTP teachers, limits and retries all apply) until ``count``
tasks exist. The output JSONL is rewritten whole after every round, so a stopped run keeps its
tasks and the same command continues it.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from retort.capture.prompts import load_prompts
from retort.capture.runner import generate, load_teacher
from retort.config import GenerateConfig
from retort.errors import InputError
from retort.progress import Progress, Silent

INSTRUCTION = (
    "You write tasks for a helpful assistant. Here are some tasks:\n{examples}\n"
    "Write one new task that is different from all of these, on another topic. "
    "Reply with the task only, in one sentence."
)
_PREFIX = re.compile(
    r"^\s*(?:\d+[.)]|[-*•]|(?:your |the |a |new |one new )*task\s*\d*\s*:)\s*", re.IGNORECASE
)


# Text about the instruction, the examples or the writer itself, not a task for an assistant.
_META = re.compile(
    r"\b(?:tasks?|assistant|previous ones?|above ones?|examples? above|one sentence|"
    r"no longer needed|sentence you provided|language model|an ai)\b|^(?:i|i'm|i am|my|we|"
    r"sure|here|okay|ok|certainly|as an)\b",
    re.IGNORECASE,
)
# How requests begin: a question, or an imperative (the seeds' own first words, and common ones).
_QUESTION_WORDS = (
    "what why how which who whom whose when where is are can could would should do does "
    "did will was were"
)
_QUESTION = frozenset(_QUESTION_WORDS.split())
_IMPERATIVE_WORDS = (
    "write rewrite give tell name make compute suggest list explain describe classify "
    "turn summarize summarise sum subtract shorten say paraphrase fix correct change "
    "multiply calculate add translate compare create draft compose design plan outline "
    "identify define find convert sort rank recommend propose solve estimate show "
    "provide generate imagine choose pick offer help analyze analyse evaluate edit "
    "proofread simplify expand count spell order match predict argue brainstorm invent "
    "divide check reply answer implement demonstrate"
)
_IMPERATIVE = frozenset(_IMPERATIVE_WORDS.split())


def is_request(task: str, min_words: int = 3) -> bool:
    """Whether a cleaned answer reads as a task for an assistant: a question or an imperative
    of ``min_words`` words or more, and not text about tasks, examples or the writer."""
    words = re.findall(r"[\w']+", task.lower())
    if len(words) < min_words or task.endswith(":") or _META.search(task):
        return False
    # "For a ten-year-old, explain …": the request may follow a leading phrase and a comma.
    after_comma = re.findall(r"[\w']+", task.partition(",")[2].lower())[:1]
    starts = {words[0], *after_comma}
    return task.endswith("?") or bool(starts & (_QUESTION | _IMPERATIVE))


@dataclass(frozen=True)
class SynthSettings:
    count: int = 1000  # tasks to end with (seeds not counted)
    examples_per_request: int = 3
    max_overlap: float = 0.6  # share of a task's word n-grams found in another: near-duplicate
    min_words: int = 3
    max_words: int = 60
    max_rounds: int = 50
    requests_per_round: int = 64
    batch_size: int = 8  # the teacher's batch: each round asks for whole batches
    seed: int = 0


class NgramIndex:
    """Word n-grams of the tasks kept so far, to find near-duplicates quickly."""

    def __init__(self, n: int = 3) -> None:
        self.n = n
        self.owners: dict[tuple[str, ...], set[int]] = defaultdict(set)
        self.sizes: list[int] = []

    def grams(self, text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        n = min(self.n, max(len(words), 1))
        return {tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 1))}

    def overlap(self, text: str) -> float:
        """Largest share of ``text``'s n-grams found in one kept task."""
        grams = self.grams(text)
        shared: dict[int, int] = defaultdict(int)
        for gram in grams:
            for owner in self.owners.get(gram, ()):
                shared[owner] += 1
        if not shared:
            return 0.0
        return max(count / max(1, min(len(grams), self.sizes[o])) for o, count in shared.items())

    def add(self, text: str) -> None:
        grams = self.grams(text)
        for gram in grams:
            self.owners[gram].add(len(self.sizes))
        self.sizes.append(len(grams))


def clean(answer: str) -> str:
    """The task in a teacher's answer: its first non-empty line, numbering and quotes removed."""
    for line in answer.splitlines():
        line = _PREFIX.sub("", line).strip().strip("\"'“”").strip()
        if line:
            return line
    return ""


def synthesize(
    seeds_path: Path,
    out_path: Path,
    teacher_config: GenerateConfig,
    settings: SynthSettings,
    progress: Progress | None = None,
) -> list[str]:
    """Grow ``out_path`` (JSONL of ``{"id", "prompt"}``) to ``settings.count`` new tasks."""
    progress = progress or Silent()
    seeds = [r.prompt for r in load_prompts(seeds_path) if r.prompt]
    if len(seeds) < 2:
        raise InputError(f'{seeds_path}: give at least 2 seed tasks with a "prompt"')
    out_path = Path(out_path)
    kept = [r.prompt for r in load_prompts(out_path)] if out_path.exists() else []
    index = NgramIndex()
    for task in seeds + kept:
        index.add(task)
    work = out_path.with_name(f".{out_path.name}.rounds")
    chance = random.Random(settings.seed + len(kept))
    teacher = load_teacher(teacher_config)  # once: a round is a capture, not a reload
    idle_rounds = 0
    progress.start("synth", total=settings.count, unit="tasks")
    progress.advance(min(len(kept), settings.count))
    try:
        for round_number in range(settings.max_rounds):
            if len(kept) >= settings.count or idle_rounds >= 3:
                break
            requests = _requests(seeds, kept, settings, chance, round_number)
            prompts_file = work / f"round-{round_number:03d}.jsonl"
            prompts_file.parent.mkdir(parents=True, exist_ok=True)
            prompts_file.write_text("".join(json.dumps(r) + "\n" for r in requests))
            config = teacher_config.model_copy(
                update={
                    "prompts": prompts_file,
                    "out": work / f"round-{round_number:03d}",
                    "top_k": 0,
                    "seed": settings.seed + round_number,
                }
            )
            shutil.rmtree(config.out, ignore_errors=True)
            added = 0
            for row in generate(config, teacher=teacher).store.rows():
                task = clean(row["completion"])
                if len(task.split()) > settings.max_words:
                    continue
                if not is_request(task, settings.min_words):
                    continue  # too short, a preamble ("Here's a new task:"), or about tasks
                if index.overlap(task) > settings.max_overlap:
                    continue
                index.add(task)
                kept.append(task)
                added += 1
                progress.advance(1)
                if len(kept) >= settings.count:
                    break
            idle_rounds = 0 if added else idle_rounds + 1
            _write(out_path, kept)
    finally:
        progress.finish()
    shutil.rmtree(work, ignore_errors=True)
    return kept


def _requests(
    seeds: list[str],
    kept: list[str],
    settings: SynthSettings,
    chance: random.Random,
    round_number: int,
) -> list[dict[str, str]]:
    """Meta-prompts: mostly seed examples, one synthesized when there are some (self-instruct)."""
    wanted = min(settings.requests_per_round, max(8, 2 * (settings.count - len(kept))))
    # A batch's time is its longest row's, whatever its size: fill the last batch.
    wanted = -(-wanted // settings.batch_size) * settings.batch_size
    requests = []
    for i in range(wanted):
        shown = chance.sample(seeds, min(len(seeds), settings.examples_per_request))
        if kept and len(shown) > 1:
            shown[-1] = chance.choice(kept)
        examples = "\n".join(f"{n}. {task}" for n, task in enumerate(shown, start=1))
        requests.append(
            {"id": f"r{round_number}-{i}", "prompt": INSTRUCTION.format(examples=examples)}
        )
    return requests


def _write(path: Path, tasks: list[str]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(
        "".join(
            json.dumps({"id": f"synth-{i:05d}", "prompt": t}, ensure_ascii=False) + "\n"
            for i, t in enumerate(tasks)
        )
    )
    partial.replace(path)
