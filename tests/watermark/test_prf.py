"""The PRF is a fixed function of (secret, scheme, seeding, context, token): pinned values, the
same in another process (another PYTHONHASHSEED), and the same on the scalar and numpy paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from retort.watermark.prf import PRF, mix

SECRET = bytes(range(32))
# Known answers of construction v1 (prf.py's docstring); changing any breaks every key made.
KNOWN = {
    ("kgw", "lefthash", (17,)): [
        0.3006384478422428,
        0.3494682410070995,
        0.6138687913821692,
        0.7018761645820697,
    ],
    ("kgw", "selfhash", (3, 1, 4)): [
        0.4210280172944131,
        0.9968908431114986,
        0.40836896822557434,
        0.530817209025754,
    ],
    ("gumbel", "lefthash", (1, 2, 3, 4)): [
        0.3910830543994144,
        0.31068590740660207,
        0.7541305941010532,
        0.44320270342602563,
    ],
}
TOKENS = (0, 1, 42, 49151)


def test_mix_is_splitmix64_finalizer():
    # splitmix64 seeded with 0 first returns 0xE220A8397B1DCDAF (Vigna's reference):
    # MIX(s, 0) is exactly splitmix64's output for state s.
    assert mix(0, 0) == 0xE220A8397B1DCDAF


@pytest.mark.parametrize(("scheme", "seeding", "context"), list(KNOWN))
def test_known_answers(scheme, seeding, context):
    prf = PRF(SECRET, scheme, seeding)
    assert [prf.uniform(context, t) for t in TOKENS] == KNOWN[(scheme, seeding, context)]
    vector = prf.uniforms(context, 49152)
    assert [float(vector[t]) for t in TOKENS] == KNOWN[(scheme, seeding, context)]


@pytest.mark.parametrize("seeding", ["lefthash", "selfhash"])
def test_scalar_and_vector_paths_agree_bit_for_bit(seeding):
    prf = PRF(SECRET, "kgw", seeding)
    for context in [(), (7,), (9, 8, 7)]:
        vector = prf.uniforms(context, 2000)
        assert vector.dtype == np.float64
        assert np.array_equal(vector, [prf.uniform(context, t) for t in range(2000)])
        ids = np.array([1999, 5, 5, 300])
        assert np.array_equal(prf.uniforms(context, ids), vector[ids])


def test_uniforms_look_uniform_and_keys_differ():
    a = PRF(SECRET, "kgw", "lefthash").uniforms((11,), 50_000)
    b = PRF(bytes(32), "kgw", "lefthash").uniforms((11,), 50_000)
    c = PRF(SECRET, "gumbel", "lefthash").uniforms((11,), 50_000)  # the scheme is in the tag
    assert abs(a.mean() - 0.5) < 0.01 and abs((a < 0.25).mean() - 0.25) < 0.01
    assert ((a >= 0) & (a < 1)).all()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02 and abs(np.corrcoef(a, c)[0, 1]) < 0.02


def test_selfhash_depends_on_the_candidate_and_survives_one_context_edit():
    prf = PRF(SECRET, "kgw", "selfhash")
    # the seed is a min over (context id, candidate) pairs: candidates get different seeds
    assert len({prf.seed((3, 1, 4), t) for t in range(50)}) == 50
    # changing one context id keeps the seed whenever that id did not hold the minimum
    kept = sum(prf.seed((3, 1, 4), t) == prf.seed((3, 1, 5), t) for t in range(1000))
    assert 400 < kept < 900  # ~ 3/4 of the candidates


def test_same_values_in_another_process_with_another_hash_seed():
    script = (
        "import json; from retort.watermark.prf import PRF; "
        f"p = PRF({SECRET!r}, 'kgw', 'selfhash'); q = PRF({SECRET!r}, 'gumbel', 'lefthash'); "
        "print(json.dumps([p.uniforms((3, 1, 4), 300).tolist(), "
        "q.uniforms((1, 2, 3, 4), 300).tolist()]))"
    )
    here = [
        PRF(SECRET, "kgw", "selfhash").uniforms((3, 1, 4), 300).tolist(),
        PRF(SECRET, "gumbel", "lefthash").uniforms((1, 2, 3, 4), 300).tolist(),
    ]
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(run.stdout) == here
