"""Whether a model keeps packed examples apart, checked on the model itself before training.

Packing (``data.collate(pack=True)``) relies on transformers building block-diagonal attention
from ``position_ids`` that restart at 0 when no ``attention_mask`` is given (``masking_utils``).
A model whose forward ignores them would let each example attend to the one before it: a silent
change of what is trained. Flash-attention, for one, reads packed positions only from a batch
of one row. So each run tries it once, as training calls the model: two rows, each two short
sequences packed, must give the logits each sequence gives alone.

"Give the same logits" is measured against what padding gives. A pruned model can be so
sensitive that a padded batch (a masked kernel instead of a causal one) already moves its fp32
logits by 1e-3 of their scale; packing is then as exact as the padded training it replaces,
and refusing it would cost speed for nothing. A model that attends across examples is off by
the size of the logits themselves, far beyond either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from retort.train.objectives import run_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)
_PROBE = ([3, 1, 4, 1, 5], [9, 2, 6])


@dataclass(frozen=True)
class PackingProbe:
    """Largest logit differences from each sequence run alone, relative to the logits' scale.

    Attributes:
        packed: the two sequences packed into one row (position ids restarting at 0).
        padded: the two sequences as rows of a right-padded batch (what unpacked training runs).
        leaked: packed without position ids, so the second sequence attends to the first: the
            size of the error a model that ignores packed positions makes.
    """

    packed: float
    padded: float
    leaked: float

    def keeps_apart(self, dtype: torch.dtype) -> bool:
        """Packed within ``dtype``'s tolerance, or no worse than twice padding's error and far
        (10x) below the error of attending across examples."""
        tolerance = 1e-4 if dtype == torch.float32 else 5e-2
        if self.packed < tolerance:
            return True
        return self.packed <= 2 * self.padded and self.packed * 10 < self.leaked


def probe_packing(model: PreTrainedModel) -> tuple[PackingProbe, torch.dtype]:
    """Run the probe (see the module docstring) and return its errors and the logits' dtype."""
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    first, second = ([t % vocab for t in s] for s in _PROBE)
    one, two = list(range(len(first))), list(range(len(second)))

    def logits(batch: dict[str, list]) -> torch.Tensor:
        tensors = {name: torch.tensor(value, device=device) for name, value in batch.items()}
        return run_model(model, tensors, logits=True, hidden=False).logits

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # called as training calls it (run_model), so nothing differs
            rows = logits(
                {
                    "input_ids": [first + second, second + first],
                    "position_ids": [one + two, two + one],
                }
            )
            first_alone, second_alone = (logits({"input_ids": [s]})[0] for s in (first, second))
            pad = [0] * (len(first) - len(second))
            padded = logits(
                {
                    "input_ids": [first, second + pad],
                    "attention_mask": [[1] * len(first), [1] * len(second) + [0] * len(pad)],
                }
            )
            leaked = logits({"input_ids": [first + second]})[0, len(first) :]
    finally:
        model.train(was_training)
    scale = max(float(torch.cat([first_alone, second_alone]).abs().max()), 1.0)

    def error(got: torch.Tensor, want: torch.Tensor) -> float:
        return float((got.float() - want.float()).abs().max()) / scale

    together = torch.cat([rows[0], rows[1]])
    alone = torch.cat([first_alone, second_alone, second_alone, first_alone])
    probe = PackingProbe(
        packed=error(together, alone),
        padded=max(error(padded[0], first_alone), error(padded[1, : len(second)], second_alone)),
        leaked=error(leaked, second_alone),
    )
    return probe, together.dtype


def keeps_packed_examples_apart(model: PreTrainedModel) -> bool:
    """True when the model's logits for two sequences packed into each of two rows (in both
    orders) equal their logits run one at a time, as closely as a padded batch's do."""
    probe, dtype = probe_packing(model)
    return probe.keeps_apart(dtype)


def packing_for(config_pack: bool, models: dict[str, PreTrainedModel | None]) -> bool:
    """``config_pack``, unless one of ``models`` would attend across packed examples: then a
    warning naming it, and padded batches."""
    if not config_pack:
        return False
    for role, model in models.items():
        if model is None:
            continue
        probe, dtype = probe_packing(model)
        if not probe.keeps_apart(dtype):
            log.warning(
                "%s (%s) does not keep packed examples apart (packed logits off by %.2g of "
                "their scale, padded %.2g, attending across examples %.2g); training on padded "
                "batches (pack: false)",
                role,
                type(model).__name__,
                probe.packed,
                probe.padded,
                probe.leaked,
            )
            return False
    return True
