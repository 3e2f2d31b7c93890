"""Score an audit's pairs under each key: exact p-values, Bonferroni, and the null-key control.

Per key, exactly as the detector scores a text (``retort.watermark.detect``): each pair is
identified by (seed, token), the seed the key's PRF draws u from, and counted once; KGW counts
the green pairs (p = P(Bin(n, gamma) >= g)), Gumbel sums -log(1 - u) (p = P(Gamma(n, 1) >= s);
a dual key scores max(u_a, u_b) ** 2). Several keys: the smallest p times their number.

The null-key control repeats the scoring with random keys of the same scheme and settings. The
suspect never saw text watermarked with them, so their p-values must look uniform: if they
pile up near 0, the corpus or the filters are leaking (repeated text, a copying model) and the
audit's p-value should not be trusted. Only the scoring repeats: the suspect's predictions are
computed once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from retort.audit.pairs import Candidates
from retort.errors import ConfigError
from retort.watermark import stats
from retort.watermark.detect import token_value
from retort.watermark.keys import Key, new_key
from retort.watermark.prf import mix_array, unit_array


@dataclass(frozen=True)
class KeyScore:
    """One key's test over the audit's pairs.

    Attributes:
        key, key_id, scheme: which key (its file name, its public id).
        scored_tokens: distinct pairs scored (n).
        duplicates: pairs merged with another of the same seed and token (selfhash only;
            identical pairs were merged before scoring, see ``Candidates.repeats``).
        score: kgw: green pairs; gumbel: the sum of -log(1 - u).
        p_value: the exact tail probability of ``score`` for this key alone.
        z_score: the standardized score.
    """

    key: str
    key_id: str
    scheme: str
    scored_tokens: int
    duplicates: int
    score: float
    p_value: float
    z_score: float


def check_keys(keys: Sequence[Key]) -> int:
    """The ``history`` every key shares (the pairs are built once for all of them).

    Raises:
        ConfigError: no key, or keys that read different numbers of ids.
    """
    if not keys:
        raise ConfigError("--key: give at least one key file")
    histories = {key.history for key in keys}
    if len(histories) > 1:
        names = ", ".join(f"{key.name} (h={key.context_width}, {key.seeding})" for key in keys)
        raise ConfigError(
            f"--key: keys read different contexts ({names}); audit them in separate runs"
        )
    return histories.pop()


def score_key(candidates: Candidates, key: Key) -> KeyScore:
    """Test the audit's pairs for ``key``'s watermark."""
    pairs, values = _pair_values(candidates, key)
    seen: dict[Hashable, float] = {}
    for pair, value in zip(pairs, values, strict=True):
        seen.setdefault(pair, value)
    n, total = len(seen), math.fsum(seen.values())
    if key.scheme == "kgw":
        green = round(total)
        p, z, total = (
            stats.binomial_p_value(green, n, key.gamma),
            stats.z_score(green, n, key.gamma),
            float(green),
        )
    else:
        p, z = stats.gamma_p_value(total, n), stats.gumbel_z_score(total, n)
    return KeyScore(key.name, key.key_id, key.scheme, n, len(pairs) - n, total, p, z)


def combined_p_value(scores: Sequence[KeyScore]) -> tuple[float, KeyScore]:
    """The smallest p times the number of keys (Bonferroni), and the key that gave it."""
    best = min(scores, key=lambda s: s.p_value)
    return stats.bonferroni(best.p_value, len(scores)), best


def null_keys(keys: Sequence[Key], trials: int, seed: int | None = None) -> list[list[Key]]:
    """``trials`` sets of random keys, one per key of ``keys`` with its scheme and settings.

    Fresh secrets from the OS (``new_key``), or, given ``seed``, secrets derived from it (a
    reproducible control: the same seed gives the same null keys)."""
    sets = []
    for trial in range(trials):
        made = []
        for index, key in enumerate(keys):
            fresh = new_key(
                key.scheme,
                seeding=key.seeding,
                context_width=key.context_width,
                gamma=key.gamma,
                delta=key.delta,
                dual=key.dual,
                name=f"null-{trial}",
            )
            if seed is not None:
                secrets = tuple(
                    hashlib.sha256(
                        f"retort-audit-null/{seed}/{trial}/{index}/{s}".encode()
                    ).digest()
                    for s in range(len(fresh.secrets))
                )
                fresh = dataclasses.replace(fresh, secrets=secrets)
            made.append(fresh)
        sets.append(made)
    return sets


@dataclass(frozen=True)
class NullControl:
    """The audit repeated with random keys that never watermarked anything.

    Attributes:
        trials: sets of random keys tried (one key per audited key in each).
        p_values: each trial's p-value, computed as the audit's is (Bonferroni over keys).
        key_p_values: every random key's own p-value (trials x keys): uniform under the null.
        ks_statistic, ks_p_value: Kolmogorov-Smirnov test of ``key_p_values`` against
            Uniform(0, 1) (``scipy.stats.kstest``); a small ks_p_value says the null p-values
            are not uniform: the audit is miscalibrated on this corpus.
        empirical_p_value: (1 + trials with p <= the audit's p) / (1 + trials): where the
            audit's p-value ranks among the null keys', whatever its calibration (it cannot go
            below 1 / (1 + trials)).
    """

    trials: int
    p_values: list[float]
    key_p_values: list[float]
    ks_statistic: float
    ks_p_value: float
    empirical_p_value: float


def null_control(
    candidates: Candidates, keys: Sequence[Key], trials: int, observed: float, seed: int | None
) -> NullControl:
    """Score ``candidates`` under ``trials`` sets of random keys (see :func:`null_keys`)."""
    from scipy import stats as scipy_stats

    combined, each = [], []
    for made in null_keys(keys, trials, seed):
        scores = [score_key(candidates, key) for key in made]
        combined.append(combined_p_value(scores)[0])
        each += [s.p_value for s in scores]
    test = scipy_stats.kstest(each, "uniform")
    below = sum(p <= observed for p in combined)
    return NullControl(
        trials=trials,
        p_values=combined,
        key_p_values=each,
        ks_statistic=float(test.statistic),
        ks_p_value=float(test.pvalue),
        empirical_p_value=(1 + below) / (1 + trials),
    )


def _pair_values(candidates: Candidates, key: Key) -> tuple[list[Hashable], list[float]]:
    """Each candidate's identity (seed, token) under ``key`` and its value (``token_value``).

    lefthash draws one seed per context, so a whole audit is one HMAC per distinct context and
    a vectorized MIX; selfhash's seed depends on the token, and goes pair by pair."""
    contexts, tokens = candidates.contexts, candidates.tokens
    if key.seeding != "lefthash":
        pairs = [(key.prfs[0].seed(c, t), t) for c, t in zip(contexts, tokens, strict=True)]
        values = [token_value(key, c, t) for c, t in zip(contexts, tokens, strict=True)]
        return pairs, values
    ids = np.asarray(tokens, dtype=np.uint64)  # (N,)
    seeds = [_context_seeds(key, which, contexts) for which in range(len(key.prfs))]
    u = np.max([unit_array(mix_array(s, ids)) for s in seeds], axis=0)  # (N,)
    if key.scheme == "kgw":
        values = (u < key.gamma).astype(np.float64)
    else:
        values = -np.log1p(-(u * u if key.dual else u))
    pairs = list(zip(seeds[0].tolist(), tokens, strict=True))
    return pairs, values.tolist()


def _context_seeds(key: Key, which: int, contexts: list[tuple[int, ...]]) -> np.ndarray:
    prf = key.prfs[which]
    table: dict[tuple[int, ...], int] = {}
    for context in contexts:
        if context not in table:
            table[context] = prf.context_seed(context)
    return np.array([table[c] for c in contexts], dtype=np.uint64)  # (N,)
