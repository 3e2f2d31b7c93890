"""Whether a model keeps packed examples apart, checked on the model itself before training.

Packing (``data.collate(pack=True)``) relies on transformers building block-diagonal attention
from ``position_ids`` that restart at 0 when no ``attention_mask`` is given (``masking_utils``).
A model whose forward ignores them would let each example attend to the one before it: a silent
change of what is trained. Flash-attention, for one, reads packed positions only from a batch
of one row. So each run tries it once, as training calls the model: two rows, each two short
sequences packed, must give the logits each sequence gives alone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from retort.train.objectives import run_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)
_PROBE = ([3, 1, 4, 1, 5], [9, 2, 6])


def keeps_packed_examples_apart(model: PreTrainedModel) -> bool:
    """True when the model's logits for two sequences packed into each of two rows (in both
    orders) equal their logits run one at a time (to the precision of its dtype)."""
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    first, second = ([t % vocab for t in s] for s in _PROBE)
    one, two = list(range(len(first))), list(range(len(second)))
    packed = {
        "input_ids": torch.tensor([first + second, second + first], device=device),
        "position_ids": torch.tensor([one + two, two + one], device=device),
    }
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # called as training calls it (run_model), so nothing differs
            rows = run_model(model, packed, logits=True, hidden=False).logits
            first_alone, second_alone = (
                run_model(
                    model, {"input_ids": torch.tensor([s], device=device)}, True, False
                ).logits[0]
                for s in (first, second)
            )
    finally:
        model.train(was_training)
    together = torch.cat([rows[0], rows[1]])
    alone = [first_alone, second_alone, second_alone, first_alone]
    tolerance = 1e-4 if together.dtype == torch.float32 else 5e-2
    scale = max(float(torch.cat(alone).abs().max()), 1.0)
    return bool(((together.float() - torch.cat(alone).float()).abs().max() / scale) < tolerance)


def packing_for(config_pack: bool, models: dict[str, PreTrainedModel | None]) -> bool:
    """``config_pack``, unless one of ``models`` would attend across packed examples: then a
    warning naming it, and padded batches."""
    if not config_pack:
        return False
    for role, model in models.items():
        if model is not None and not keeps_packed_examples_apart(model):
            log.warning(
                "%s (%s) does not keep packed examples apart; training on padded batches "
                "(pack: false)",
                role,
                type(model).__name__,
            )
            return False
    return True
