"""FSDP2 for the student and the teacher (``--fsdp student,teacher``), and what it changes.

Sharding is torch's own ``fully_shard`` (the FSDP2 that accelerate's FSDP config applies too),
under the process group accelerate forms — so the same code runs on GPUs (nccl) and on CPU
processes (gloo), where accelerate itself refuses FSDP. Each decoder layer is one unit (the
classes a model lists in ``_no_split_modules``, what accelerate's TRANSFORMER_BASED_WRAP reads)
and the rest (embeddings, final norm, output layer) is the root unit.

What sharding changes elsewhere, all kept here:

- checkpoints: weights and optimizer state are written by every process as a
  torch.distributed.checkpoint folder (each its own shard; loadable on another process count);
- ``final/``: the whole weights are gathered onto the main process into a plain copy of the
  model class, which ``from_pretrained`` loads;
- the fused KD path reads the output layer after each forward: FSDP2 keeps the root unit
  gathered from its forward until its backward (a sharded teacher until ``reshard``);
- generation runs ``synced_gpus`` (``teachers.decoding.generate_exactly``): every process
  decodes until all are done, since each decoding step gathers layers collectively.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from retort.errors import ConfigError

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh
    from transformers import PreTrainedModel

SHARDED_STATE = "sharded"  # the checkpoint's sub-folder holding weights and optimizer state


def device_mesh(accelerator: Any) -> DeviceMesh:
    """One flat mesh over every process of the run."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(accelerator.device.type, (accelerator.num_processes,))


def shard(model: PreTrainedModel, mesh: DeviceMesh, role: str) -> PreTrainedModel:
    """``model``, its decoder layers and then the rest sharded over ``mesh`` (in place; its
    weights move to the mesh's device). ``role`` names it in errors."""
    from torch.distributed.fsdp import fully_shard

    layer_classes = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ConfigError(
            f"--fsdp {role}: {type(model).__name__} names no decoder layer class "
            "(_no_split_modules is empty), so it cannot be sharded per layer; drop "
            f"'{role}' from --fsdp"
        )
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def release(model: Any) -> None:
    """Free the gathered root unit of a sharded inference model (the teacher): FSDP2 keeps a
    root gathered after forward, expecting a backward that never comes."""
    if is_sharded(model):
        model.reshard()


def save_state(model: Any, optimizer: Any, folder: Path) -> None:
    """Every process writes its shard of the weights and optimizer state into ``folder``
    (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optimizer_state = get_state_dict(model, _inner(optimizer))
    dcp.save({"model": weights, "optimizer": optimizer_state}, checkpoint_id=folder)


def load_state(model: Any, optimizer: Any, folder: Path) -> None:
    """Restore what ``save_state`` wrote, resharded to this run's processes (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, optimizer_state = get_state_dict(model, _inner(optimizer))
    state = {"model": weights, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(
        model,
        _inner(optimizer),
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
    )


def gathered_copy(model: Any) -> PreTrainedModel | None:
    """On the main process, an unsharded model of the same class holding the whole weights
    (CPU); None on the others. Collective: every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)  # empty except on rank 0
    import torch.distributed as dist

    if dist.get_rank() != 0:
        return None
    plain_class = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):  # no second random init: the weights are assigned below
        plain = plain_class(model.config)
    plain.load_state_dict(weights, assign=True)
    plain.tie_weights()  # a tied head came back as its own tensor
    plain.generation_config = model.generation_config
    return plain


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def held_mib(model: Any, optimizer: Any, teacher: Any) -> dict[str, float]:
    """What this process holds of the training state, in MiB: the student's weights and
    optimizer state (its shards when sharded; a tied weight once), and the teacher's weights.
    Read after an optimizer step, when the optimizer state exists."""
    from torch.distributed.tensor import DTensor

    def size(tensors: Any) -> float:
        seen: dict[int, int] = {}
        for tensor in tensors:
            local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
            seen[local.data_ptr()] = local.numel() * local.element_size()
        return round(sum(seen.values()) / 2**20, 3)

    moments = [
        value
        for state in _inner(optimizer).state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor) and value.dim() > 0  # not the step counters
    ]
    held = {"student_weights_mib": size(model.parameters()), "optimizer_state_mib": size(moments)}
    if teacher is not None:
        held["teacher_weights_mib"] = size(teacher.parameters())
    return held
