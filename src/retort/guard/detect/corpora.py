"""Real text the traffic simulator builds requests from, all of it available offline.

Two sources are always present, so every machine simulates the same traffic:

- ``builtin``: the quickstart prompt set (``retort/quickstart/prompts.jsonl``, 492 prompts in
  seven categories, some with a reference answer);
- ``stdlib``: the docstrings of a fixed, sorted list of standard-library modules and their
  public functions and classes (``inspect.getdoc``). From them come questions ("What does
  ``json.dumps`` do?"), passages (their first sentences and paragraphs) and topics.

Optional extras (``fortunes``, ``words``: ``/usr/share/games/fortunes``, ``/usr/share/dict``)
join only when asked for, so the default corpus never depends on what a machine has installed.
Docstrings follow the Python version: the same version gives the same corpus.

Every text comes from one *source unit* (a prompt, a module, a fortune file) and each unit
belongs to split ``a`` or ``b`` by a hash of its name, so a detector tuned on traffic built from
split ``a`` is measured on traffic whose text it has never seen.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from retort.errors import ConfigError

SPLITS = ("a", "b")
EXTRAS = ("fortunes", "words")
# Modules whose docstrings do not depend on the platform (os, socket, signal ... do).
_MODULE_NAMES = (
    "abc argparse array ast asyncio base64 bisect calendar collections colorsys "
    "configparser contextlib copy csv dataclasses datetime decimal difflib email.message "
    "enum filecmp fnmatch fractions functools getopt gettext glob graphlib gzip hashlib "
    "heapq hmac html html.parser http.client http.cookies imaplib inspect io ipaddress "
    "itertools json keyword linecache logging lzma mailbox math mimetypes operator optparse "
    "pathlib pickle plistlib pprint queue quopri random re reprlib sched secrets shelve "
    "shlex shutil smtplib sqlite3 statistics string stringprep struct subprocess tarfile "
    "tempfile textwrap threading timeit tokenize tomllib traceback types typing "
    "unicodedata unittest urllib.parse urllib.request uuid warnings wave weakref "
    "xml.dom.minidom xml.etree.ElementTree zipfile zlib zoneinfo"
)
MODULES = tuple(sorted(_MODULE_NAMES.split()))
FORTUNES = Path("/usr/share/games/fortunes")
WORDS = Path("/usr/share/dict/words")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


@dataclass(frozen=True)
class Prompt:
    """One prompt of the quickstart set: ``category`` is its id's prefix (``explain``)."""

    id: str
    category: str
    text: str
    reference: str | None = None


@dataclass(frozen=True)
class Doc:
    """One public function or class of a standard-library module and its docstring."""

    module: str
    name: str
    doc: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def summary(self) -> str:
        """The docstring's first sentence."""
        return first_sentence(self.doc)


@dataclass(frozen=True)
class Corpus:
    """The texts of one split. ``units`` names every source unit used (for disjointness)."""

    name: str
    split: str
    prompts: tuple[Prompt, ...]
    docs: tuple[Doc, ...]
    passages: tuple[str, ...]
    topics: tuple[str, ...]
    units: frozenset[str]

    def by_category(self, *categories: str) -> tuple[Prompt, ...]:
        """The prompts of these categories (all of them when none is named)."""
        return tuple(p for p in self.prompts if not categories or p.category in categories)


def split_of(unit: str) -> str:
    """``a`` or ``b`` for a source unit's name: a stable hash, the same on every machine."""
    return SPLITS[hashlib.sha256(unit.encode()).digest()[0] & 1]


def first_sentence(text: str) -> str:
    """The first sentence of a paragraph of prose, whitespace folded."""
    flat = " ".join(text.split("\n\n", 1)[0].split())
    return _SENTENCE.split(flat, 1)[0]


def words(text: str) -> int:
    """Whitespace-separated words (the simulator's tokens are about 1.3 per word)."""
    return len(text.split())


@cache
def load(split: str = "a", extras: tuple[str, ...] = ()) -> Corpus:
    """The corpus of one split; ``extras`` adds optional sources that exist on this machine.

    Raises:
        ConfigError: an unknown split or extra.
    """
    if split not in SPLITS:
        raise ConfigError(f"split: '{split}' is not one of {', '.join(SPLITS)}")
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise ConfigError(f"extras: '{unknown[0]}' is not one of {', '.join(EXTRAS)}")
    mine, theirs = _raw(split, extras), _raw(SPLITS[1 - SPLITS.index(split)], extras)
    # The same text under two units (an enum's docstring in two modules) goes to neither
    # split's questions or passages, so no text is seen in both.
    seen = {d.doc for d in theirs.docs} | set(theirs.passages) | set(theirs.topics)
    docs = tuple(d for d in mine.docs if d.doc not in seen)
    passages = tuple(p for p in mine.passages if p not in seen)
    topics = tuple(t for t in mine.topics if t not in seen)
    name = "+".join(("builtin", "stdlib", *sorted(set(extras))))
    return Corpus(name, split, mine.prompts, docs, passages, topics, mine.units)


@cache
def _raw(split: str, extras: tuple[str, ...]) -> Corpus:
    """Everything of one split's units, before text shared with the other split is dropped."""
    prompts = tuple(p for p in builtin_prompts() if split_of(f"builtin:{p.id}") == split)
    docs = tuple(d for d in stdlib_docs() if split_of(f"stdlib:{d.module}") == split)
    extra: dict[str, list[str]] = {"passage": [], "topic": []}
    units = {f"builtin:{p.id}" for p in prompts} | {f"stdlib:{d.module}" for d in docs}
    for unit, kind, text in _extras(extras):
        if split_of(unit) == split:
            extra[kind].append(text)
            units.add(unit)
    passages = tuple(_passages(docs)) + tuple(extra["passage"])
    topics = _topics(prompts, docs) + tuple(extra["topic"])
    return Corpus("", split, prompts, docs, passages, topics, frozenset(units))


@cache
def builtin_prompts() -> tuple[Prompt, ...]:
    """The quickstart prompt set, in file order."""
    text = resources.files("retort.quickstart").joinpath("prompts.jsonl").read_text()
    out = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            category = record["id"].rsplit("-", 1)[0]
            out.append(Prompt(record["id"], category, record["prompt"], record.get("reference")))
    return tuple(out)


@cache
def stdlib_docs() -> tuple[Doc, ...]:
    """Docstrings of ``MODULES``' public functions and classes defined there (not re-exports),
    sorted by module and name; docstrings under 40 characters say too little to use."""
    out = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr)
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            doc = inspect.getdoc(obj)
            if doc and len(doc) >= 40 and first_sentence(doc)[:1].isalpha():
                out.append(Doc(name, attr, doc))
    return tuple(out)


def _passages(docs: tuple[Doc, ...]) -> list[str]:
    """Prose paragraphs of the docstrings (signatures, doctests and tables left out)."""
    out = []
    for doc in docs:
        for paragraph in doc.doc.split("\n\n"):
            flat = " ".join(paragraph.split())
            if 12 <= words(flat) <= 120 and flat[:1].isupper() and ">>>" not in flat:
                out.append(flat)
    return out


_COUNTRY = re.compile(r"capital (?:city )?of ([A-Z][A-Za-z .'-]+?)[.?]")
_EXPLAIN = re.compile(r"explain (.+?)[.?]$")
_WHAT = re.compile(r"^What (?:is|are) (?:a |an |the )?([a-z][a-z -]+)\?$")


def _topics(prompts: tuple[Prompt, ...], docs: tuple[Doc, ...]) -> tuple[str, ...]:
    """Subjects a template can be filled with: countries, things the prompts ask about, and
    standard-library modules and functions."""
    topics: list[str] = []
    for p in prompts:
        for pattern, form in ((_COUNTRY, "the history of {}"), (_EXPLAIN, "{}"), (_WHAT, "{}")):
            match = pattern.search(p.text)
            if match:
                topics.append(form.format(match.group(1).strip()))
    modules = sorted({d.module for d in docs})
    topics += [f"Python's {m} module" for m in modules]
    topics += [f"the {d.qualname} function in Python" for d in docs if d.name[:1].islower()]
    topics += [f"the {d.qualname} class in Python" for d in docs if d.name[:1].isupper()]
    return tuple(dict.fromkeys(topics))


def _extras(extras: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(unit, ``passage`` or ``topic``, text) of the optional sources that exist here."""
    out: list[tuple[str, str, str]] = []
    if "fortunes" in extras and FORTUNES.is_dir():
        for path in sorted(FORTUNES.iterdir()):
            if path.is_file() and not path.suffix:  # the .dat index files are binary
                text = path.read_text(errors="replace")
                for fortune in text.split("\n%\n"):
                    if 8 <= words(fortune) <= 80:
                        out.append((f"fortunes:{path.name}", "passage", " ".join(fortune.split())))
    if "words" in extras and WORDS.is_file():
        text = WORDS.read_text(errors="replace")
        # Each word is a topic of its own unit; the first letter alone would split unevenly.
        for word in text.split():
            if word.isalpha() and word.islower() and len(word) >= 6:
                out.append((f"words:{word}", "topic", word))
    return out
