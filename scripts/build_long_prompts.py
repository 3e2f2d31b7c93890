"""Build the larger training prompt set of the long recipe (recipes/long/).

Writes ``recipes/long/prompts-train.jsonl``: the quickstart's training split (412 prompts) plus
short factual prompts made from the quiz tables of Debian's ``bsdgames`` package (capitals,
US states, chemical elements, collective nouns, young animals, Latin phrases, opposites), and
generated arithmetic. ``recipes/long/prompts-heldout.jsonl`` is the quickstart's held-out split,
unchanged, so the long recipe's table compares with the quickstart's.

No held-out fact leaks into training: a quiz prompt whose subject (the country, element,
state, word) or whose answer appears in a held-out prompt is dropped, and so is arithmetic on a
held-out prompt's pair of numbers.

The output is deterministic (``random.Random(0)``). Rebuild from the repo root with
``make long-prompts`` (which installs bsdgames with apt when its quiz folder is missing), or:

    python scripts/build_long_prompts.py [--quiz /usr/share/games/bsdgames/quiz]

Standard library only, Python 3.11.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = REPO_ROOT / "src" / "retort" / "quickstart" / "prompts.jsonl"
OUT = REPO_ROOT / "recipes" / "long"
HELDOUT_SHARE = 0.2  # the quickstart's split (retort.quickstart.pipeline.split_prompts)

# Each quiz file, the field holding the subject and the answer, and phrasings of the question.
CAPITAL = [
    "What is the capital of {subject}?",
    "Name the capital of {subject}.",
    "Which city is the capital of {subject}?",
]
TABLES = {
    "africa": (0, 1, CAPITAL),
    "europe": (0, 1, CAPITAL),
    "asia": (0, 1, CAPITAL),
    "america": (0, 1, CAPITAL),
    "province": (0, 1, ["What is the capital of the Canadian province of {subject}?"]),
    "state": (0, 1, ["What is the capital of the US state of {subject}?"]),
    "collectives": (0, 1, ["What is the collective noun for a group of {subject}?"]),
    "latin": (0, 1, ["What does the Latin word '{subject}' mean in English?"]),
    "posneg": (0, 1, ["What is the opposite of the word '{subject}'?"]),
    "sexes": (0, 1, ["What is the female counterpart of a {subject}?"]),
}
# More questions from the same rows: (file, subject field, answer field, phrasing).
EXTRA = [
    ("state", 0, 2, "What is the two-letter postal abbreviation of {subject}?"),
    ("state", 0, 3, "What is the state flower of {subject}?"),
    ("elements", 3, 0, "What is the chemical symbol of {subject}?"),
    ("elements", 3, 1, "What is the atomic number of {subject}?"),
    ("elements", 1, 3, "Which chemical element has atomic number {subject}?"),
]
ARITHMETIC = 400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiz", type=Path, default=Path("/usr/share/games/bsdgames/quiz"))
    args = parser.parse_args()
    if not args.quiz.is_dir():
        raise SystemExit(f"{args.quiz}: no quiz folder; apt-get install bsdgames (or --quiz DIR)")
    quickstart = [json.loads(line) for line in QUICKSTART.read_text().splitlines() if line]
    train, heldout = [], []
    for record in quickstart:
        bucket = int(hashlib.sha256(record["id"].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (heldout if bucket < HELDOUT_SHARE else train).append(record)
    held_text = " ".join(r["prompt"] + " " + r.get("reference", "") for r in heldout).lower()
    added = quiz_prompts(args.quiz, held_text) + arithmetic(heldout)
    seen = {r["prompt"].lower() for r in train + heldout}
    fresh = []
    for record in added:
        if record["prompt"].lower() not in seen:
            seen.add(record["prompt"].lower())
            fresh.append(record)
    rows = train + fresh
    random.Random(0).shuffle(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, records in (("prompts-train.jsonl", rows), ("prompts-heldout.jsonl", heldout)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        (OUT / name).write_text(text)
    print(f"{len(rows)} training prompts ({len(fresh)} new), {len(heldout)} held-out")


def quiz_prompts(folder: Path, held_text: str) -> list[dict[str, str]]:
    rng = random.Random(0)
    out = []
    questions = [(name, s, a, phrasings) for name, (s, a, phrasings) in TABLES.items()]
    questions += [(name, s, a, [phrasing]) for name, s, a, phrasing in EXTRA]
    for name, subject_field, answer_field, phrasings in questions:
        for number, fields in enumerate(quiz_rows(folder / name), 1):
            if max(subject_field, answer_field) >= len(fields):
                continue
            subject = expand(fields[subject_field], full=True)
            answer = expand(fields[answer_field], full=False)
            if not subject or not answer or leaks(subject, answer, held_text):
                continue
            if name == "province" and subject == "Canada":  # the file's last row: the country
                continue
            prompt = rng.choice(phrasings).format(subject=subject)
            tag = f"{name}-{subject_field}{answer_field}"  # one id per (row, question)
            out.append({"id": f"quiz-{tag}-{number:03d}", "prompt": prompt, "reference": answer})
    return out


def quiz_rows(path: Path) -> list[list[str]]:
    """The colon-separated rows of one quiz file (a trailing backslash continues a line)."""
    rows, pending = [], ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        if line.strip():
            rows.append(split_top(line, ":"))
    return rows


def expand(field: str, full: bool) -> str:
    """One plain form of a quiz field: the first of ``a|b`` and ``[a|b]`` alternatives, and
    ``{optional}`` parts kept (``full``: "George Washington") or dropped ("Washington")."""
    text = split_top(field, "|")[0]
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char in "{[":
            end = _closing(text, i)
            inner = text[i + 1 : end]
            if char == "[" or full:  # a bracket is a choice, kept; braces are optional
                out.append(expand(inner, full))
            i = end + 1
        else:
            out.append(char)
            i += 1
    plain = re.sub(r".\x08", "", "".join(out))  # overstruck accents: "Asunci'\bon"
    return re.sub(r"\s+", " ", plain).strip()


def split_top(text: str, separator: str) -> list[str]:
    """``text`` split on ``separator`` outside any braces or brackets."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += char in "{["
        depth -= char in "}]"
        if char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _closing(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] in "{["
        depth -= text[i] in "}]"
        if depth == 0:
            return i
    raise ValueError(f"unbalanced quiz field: {text!r}")


def leaks(subject: str, answer: str, held_text: str) -> bool:
    """Whether the held-out prompts mention this subject or answer (as a whole word)."""
    for value in (subject, answer):
        if len(value) > 2 and re.search(rf"\b{re.escape(value.lower())}\b", held_text):
            return True
    return False


def arithmetic(heldout: list[dict[str, str]]) -> list[dict[str, str]]:
    """Sums, differences and products of small numbers, none on a held-out pair."""
    held_pairs = set()
    for record in heldout:
        numbers = tuple(int(n) for n in re.findall(r"\d+", record["prompt"]))
        if len(numbers) == 2:
            held_pairs |= {numbers, numbers[::-1]}
    rng = random.Random(1)
    out: list[dict[str, str]] = []
    operations = [
        ("What is {a} plus {b}?", lambda a, b: a + b, 99),
        ("What is {a} minus {b}?", lambda a, b: a - b, 99),
        ("What is {a} times {b}?", lambda a, b: a * b, 12),
    ]
    while len(out) < ARITHMETIC:
        phrasing, apply, top = operations[len(out) % len(operations)]
        a, b = rng.randint(2, top), rng.randint(2, top)
        if phrasing.endswith("minus {b}?") and b > a:
            a, b = b, a
        if (a, b) in held_pairs:
            continue
        number = len(out) + 1
        out.append(
            {
                "id": f"sum-{number:03d}",
                "prompt": phrasing.format(a=a, b=b),
                "reference": str(apply(a, b)),
            }
        )
    return out


if __name__ == "__main__":
    main()
