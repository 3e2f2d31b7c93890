"""Feature families, one module each, and the registry the scanner and the gateway build from.

Cheap families update per request (the gateway's request path); embedding families read the
window's prompt embeddings, computed in batches off that path.
"""

from __future__ import annotations

from retort.guard.detect.features.base import EmbeddingFamily, Family, Feature


def cheap_families() -> list[Family]:
    """A fresh instance of every per-request family, in the order reasons are read."""
    from retort.guard.detect.features.elicit import Elicitation
    from retort.guard.detect.features.sweeps import Sweeps
    from retort.guard.detect.features.templates import Templates
    from retort.guard.detect.features.timing import Timing
    from retort.guard.detect.features.turns import Turns
    from retort.guard.detect.features.volume import Volume

    return [Volume(), Timing(), Turns(), Sweeps(), Templates(), Elicitation()]


def embedding_families(reference=None) -> list[EmbeddingFamily]:
    """A fresh instance of every embedding family. ``reference`` (benign traffic's
    embeddings, see ``features.window``) enables the benign-calibrated window test."""
    from retort.guard.detect.features.prada import Prada
    from retort.guard.detect.features.topics import Topics

    families: list[EmbeddingFamily] = [Topics(), Prada()]
    if reference is not None:
        from retort.guard.detect.features.window import WindowTest

        families.append(WindowTest(reference))
    return families


def all_features() -> dict[str, Feature]:
    """Every feature any family can report, by name."""
    from retort.guard.detect.features.window import WindowTest

    out: dict[str, Feature] = {}
    for family in [*cheap_families(), *embedding_families(), WindowTest]:
        out.update({f.name: f for f in family.features})
    return out
