"""What the audit scores: (context, token) pairs, and the filters that keep the p-value honest.

A pair is the ``history`` real ids before a position (the watermark context, as the detector
reads it) and the token scored there: the suspect's top-1 prediction (reading mode) or the
token it wrote (sampling). Its k-gram is ``context + (token,)``, k = history + 1.

The null hypothesis is that the suspect never learned from text watermarked with the key; then
the scored tokens are chosen without the key, and distinct pairs have independent uniforms u.
Three things break that, and each has a filter; a position is counted under the first filter
that removes it:

- ``input``: the pair's k-gram occurs in the text being read (reading) or in the prompt
  (sampling). A model that copies from its context, or simply predicts the next token of a
  watermarked text correctly, reproduces that text's watermark without having been trained on
  it: the input's k-grams are not evidence.
- ``listed``: k-grams the caller excludes (e.g. every k-gram of a watermarked corpus the
  suspect may have read in its prompts, or of public text).
- ``frequent``: the ``top`` most frequent k-grams of the audit corpus. Common phrases are what
  any model predicts, and when the corpus is itself watermarked they are the ones most likely
  to have been written green elsewhere in it.

Then **de-duplication**: a pair seen again anywhere in the audit is scored once (repeated u
would be counted twice otherwise). Identical (context, token) pairs collapse here, whatever the
key; the scorer also merges pairs that share the key's seed (selfhash windows with one minimum),
as the detector does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

FILTERS = ("input", "listed", "frequent")
KGram = tuple[int, ...]
Pair = tuple[KGram, int]  # (context, token)


def kgrams(ids: Sequence[int], k: int) -> set[KGram]:
    """Every run of ``k`` consecutive ids of ``ids``."""
    ids = tuple(int(i) for i in ids)
    return {ids[i : i + k] for i in range(len(ids) - k + 1)}


def frequent_kgrams(sequences: Iterable[Sequence[int]], k: int, top: int) -> set[KGram]:
    """The ``top`` most frequent k-grams over ``sequences`` (every occurrence counts; ties are
    broken by first appearance, so the set is a function of the corpus alone)."""
    if top <= 0:
        return set()
    counts: Counter[KGram] = Counter()
    for ids in sequences:
        ids = tuple(int(i) for i in ids)
        counts.update(ids[i : i + k] for i in range(len(ids) - k + 1))
    return {gram for gram, _ in counts.most_common(top)}


@dataclass
class Candidates:
    """The distinct pairs an audit scores, and what was removed on the way.

    Attributes:
        history: ids of context per pair (the key's ``history``).
        pairs: distinct (context, token) pairs, in the order first seen.
        positions: positions offered (with a full context).
        excluded: positions each filter removed (``FILTERS``; the first that applies counts).
        repeats: positions whose pair was already kept (de-duplication).
        unmapped: positions skipped because an id there was not known (-1: a served token
            that maps to no id of the tokenizer).
        texts: sequences read.
    """

    history: int
    pairs: dict[Pair, None] = field(default_factory=dict)
    positions: int = 0
    excluded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    repeats: int = 0
    unmapped: int = 0
    texts: int = 0

    @property
    def contexts(self) -> list[KGram]:
        return [context for context, _ in self.pairs]

    @property
    def tokens(self) -> list[int]:
        return [token for _, token in self.pairs]


class PairCollector:
    """Builds :class:`Candidates` text by text, applying the filters.

    Args:
        history: the keys' ``history`` (every key of one audit reads the same number of ids).
        listed: k-grams to exclude whatever the text.
        frequent: k-grams to exclude as frequent (see :func:`frequent_kgrams`).
    """

    def __init__(
        self, history: int, listed: Iterable[KGram] = (), frequent: Iterable[KGram] = ()
    ) -> None:
        self.k = history + 1
        self.listed, self.frequent = set(listed), set(frequent)
        self.result = Candidates(history)

    def add(self, ids: Sequence[int], scored: Iterable[tuple[int, int]], own: set[KGram]) -> None:
        """Offer one text's positions.

        Args:
            ids: the text's real ids (the contexts are read from them).
            scored: (position p, token) pairs: the token scored at p, whose context is
                ``ids[p - history : p]``; positions without a full context are skipped.
            own: the k-grams of the input (the text read, or the prompt): excluded.
        """
        found, history = self.result, self.result.history
        found.texts += 1
        for position, token in scored:
            if position < history:
                continue
            context = tuple(int(i) for i in ids[position - history : position])
            if token < 0 or any(i < 0 for i in context):
                found.unmapped += 1
                continue
            found.positions += 1
            gram = (*context, int(token))
            reason = (
                "input"
                if gram in own
                else "listed"
                if gram in self.listed
                else "frequent"
                if gram in self.frequent
                else None
            )
            if reason is not None:
                found.excluded[reason] += 1
            elif (context, int(token)) in found.pairs:
                found.repeats += 1
            else:
                found.pairs[(context, int(token))] = None

    def add_prediction(self, ids: Sequence[int], predicted: Sequence[int]) -> None:
        """Reading mode: ``predicted[j]`` is the suspect's top-1 at position history + j, given
        ``ids[:history + j]`` (position len(ids), after the whole text, included)."""
        history = self.result.history
        scored = ((history + j, token) for j, token in enumerate(predicted))
        self.add(ids, scored, kgrams(ids, self.k))

    def add_sample(self, prompt: Sequence[int], completion: Sequence[int]) -> None:
        """Sampling: every token of ``completion``, its context read across the prompt; the
        prompt's own k-grams are excluded (copying the prompt is not evidence)."""
        ids = [*prompt, *completion]
        scored = ((len(prompt) + j, token) for j, token in enumerate(completion))
        self.add(ids, scored, kgrams(prompt, self.k))
