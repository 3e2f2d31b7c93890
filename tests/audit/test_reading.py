"""Reading mode: a suspect that favours the key's tokens gives a tiny p-value; an unrelated one
does not; random null keys give uniform p-values; the forward passes are batched correctly."""

from __future__ import annotations

import pytest
import torch

from retort.audit.reading import _top1, _windows, audit_reading, top1_predictions
from tests.audit.conftest import favouring
from tests.conftest import build_tiny_model


@pytest.mark.parametrize("scheme", ["kgw", "gumbel"])
def test_a_suspect_that_favours_the_key_is_detected(
    scheme, request, tiny_tokenizer, corpus, unrelated
):
    key = request.getfixturevalue(f"{scheme}_key")
    suspect = favouring(tiny_tokenizer, key)
    result = audit_reading(suspect, tiny_tokenizer, corpus, [key], frequent=20)
    assert result.mode == "reading" and result.scored_tokens >= 200
    assert result.p_value < 1e-12
    assert "Evidence that the suspect was trained" in result.statement

    control = audit_reading(unrelated, tiny_tokenizer, corpus, [key], frequent=20)
    assert control.scored_tokens >= 100
    assert control.p_value > 1e-3
    assert "not evidence of absence" in control.statement


def test_null_keys_give_uniform_p_values(tiny_tokenizer, corpus, kgw_key):
    suspect = favouring(tiny_tokenizer, kgw_key)
    result = audit_reading(
        suspect, tiny_tokenizer, corpus, [kgw_key], frequent=20, null_keys=24, null_seed=0
    )
    control = result.null
    assert control is not None and control.trials == 24 and len(control.key_p_values) == 24
    assert control.ks_p_value > 0.01
    assert sum(p < 0.05 for p in control.key_p_values) <= 5  # not piled at 0
    assert control.empirical_p_value == pytest.approx(1 / 25)  # the real key beats them all
    again = audit_reading(
        suspect, tiny_tokenizer, corpus, [kgw_key], frequent=20, null_keys=24, null_seed=0
    )
    assert again.null.key_p_values == control.key_p_values  # a seed makes the control repeatable


def test_several_keys_are_bonferroni_corrected(tiny_tokenizer, corpus, kgw_key):
    from tests.watermark.conftest import make_key

    suspect = favouring(tiny_tokenizer, kgw_key)
    other = make_key("kgw", seed=99)
    result = audit_reading(suspect, tiny_tokenizer, corpus, [other, kgw_key], frequent=20)
    assert len(result.keys) == 2
    best = min(s.p_value for s in result.keys)
    assert result.p_value == pytest.approx(min(1.0, 2 * best))
    assert result.keys[1].p_value == best


def test_head_on_scored_positions_matches_the_full_logits(tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, layers=2, seed=5).eval()
    rows = [list(range(10, 30)), list(range(40, 52)), [7, 8, 9]]
    got = _top1(model, rows, first=1)
    for row, tokens in zip(rows, got, strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row])).logits[0]  # (T, V)
        assert tokens == logits[1:].argmax(-1).tolist()


def test_windows_predict_every_position_once(tiny_tokenizer):
    history, length = 3, 8
    sequences = [list(range(5, 5 + n)) for n in (2, 3, 8, 9, 20)]
    windows = _windows(sequences, history, length)
    for i, ids in enumerate(sequences):
        covered = []
        for _, start, end in (w for w in windows if w[0] == i):
            covered += range(start + history, end + 1)  # positions this window predicts
            assert end - start <= length
        assert covered == list(range(history, len(ids) + 1))

    model = build_tiny_model(tiny_tokenizer, layers=2, seed=5).eval()
    one = top1_predictions(model, sequences, history, max_length=length, batch_size=1)
    batched = top1_predictions(model, sequences, history, max_length=length, batch_size=4)
    assert one == batched  # padding and batch composition change nothing
    assert [len(p) for p in one] == [max(0, len(s) - history + 1) for s in sequences]
    whole = top1_predictions(model, [sequences[3]], history, max_length=64)[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([sequences[3]])).logits[0]  # (T, V)
    assert whole == logits[history - 1 :].argmax(-1).tolist()


@pytest.mark.parametrize(
    "settings",
    [
        {"scheme": "gumbel"},
        {"scheme": "kgw", "seeding": "selfhash"},
        {"scheme": "gumbel", "dual": True},
    ],
)
def test_wider_contexts_give_unrelated_suspects_no_signal(
    settings, tiny_tokenizer, corpus, unrelated
):
    from tests.watermark.conftest import make_key

    key = make_key(seed=41, **settings)  # h = 4: windows overlap by three ids
    result = audit_reading(unrelated, tiny_tokenizer, corpus, [key], frequent=20, max_length=32)
    assert result.scored_tokens >= 100
    assert result.p_value > 1e-3
