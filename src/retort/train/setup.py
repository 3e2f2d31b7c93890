"""Put together what a distillation run needs: the store's rows, student, teacher, vocab width.

Everything here fails before the run folder is created, so a bad flag never leaves one behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from retort.capture.runner import other_teacher
from retort.capture.store import Store
from retort.config import DistillConfig, is_http_teacher
from retort.crosstok.live import LiveTeacherTargets
from retort.crosstok.token_store import token_rows_as_text
from retort.errors import ConfigError, ModelError, StoreError
from retort.losses import HiddenProjector, default_layer_map
from retort.models.importance import calibration_sequences, spread
from retort.models.loading import load_tokenizer, resolve
from retort.models.lora import add_lora
from retort.models.pruning import PRUNED_FILE, PruneSpec, parse_prune_spec, pruned
from retort.models.students import load_student
from retort.models.vocab import shared_vocab_size, tokenizer_hash
from retort.teachers.local import LocalTeacher
from retort.train.objectives import LIVE_TEACHER, ForwardPlan, fused_head_matches
from retort.train.packing import packing_for
from retort.train.remote_teacher import RemoteScorer
from retort.train.text_store import refuse_teacher_objectives, rows_in_student_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
REMOTE_TOP_K = 20  # logprobs asked of an HTTP teacher when the store holds none


@dataclass
class RunParts:
    """The pieces of a run, loaded and checked against each other."""

    store: Store
    rows: list[dict[str, Any]]
    student: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    teacher: LocalTeacher | None  # loaded when the objective or the student needs it
    vocab_size: int  # logit columns shared by student and teacher
    top_k: int  # teacher logprobs per position in the store (0: text only)
    plan: ForwardPlan  # what each forward pass must produce
    layer_map: list[int] | None  # hidden-state matching, when hidden_weight > 0
    projector: HiddenProjector | None
    scorer: RemoteScorer | None = None  # an HTTP teacher grading on-policy samples
    live: LiveTeacherTargets | None = None  # cross_tokenizer: the teacher scoring each batch
    pack: bool = False  # micro-batches packed (config.pack, where the models keep examples apart)
    pruned: dict[str, Any] | None = None  # what a prune: student kept (RUN/pruned.json)


def assemble(
    config: DistillConfig,
    teacher: LocalTeacher | None = None,
    student: PreTrainedModel | None = None,
) -> RunParts:
    """Open the store, load or build the models, and check that they fit together."""
    store = Store.open(config.data)
    rows = store.read_table().to_pylist()
    if not rows:
        raise StoreError(f"{config.data}: store has no rows; run retort generate first")
    stored_k = int(store.fingerprint.get("top_k") or 0)
    if store.is_text:  # sft or cross_tokenizer: refused before any model loads
        refuse_teacher_objectives(config, config.data, stored_k)
    # A text store's top-k is token strings: only cross_tokenizer puts them on the student's
    # positions.
    top_k = 0 if store.is_text and config.objective != "cross_tokenizer" else stored_k
    live = config.live_top_k > 0  # cross_tokenizer: the local teacher's top-k, not the store's
    if live:
        top_k = config.live_top_k
    # cross_tokenizer on a token store reads the teacher's ids through its tokenizer
    teacher_ids = config.objective == "cross_tokenizer" and not store.is_text
    if teacher_ids and (config.teacher is None or is_http_teacher(config.teacher)):
        raise StoreError(
            f"{config.data}: a token store holds the teacher's token ids; give --teacher SPEC "
            "(the local teacher that made it), whose tokenizer turns them into bytes for "
            "--objective cross_tokenizer (a student of the same tokenizer: --objective topk)"
        )
    needs_stored_topk = (
        config.objective == "topk"
        or (config.objective == "cross_tokenizer" and not live)
        or (
            is_http_teacher(config.teacher) and config.objective == "on_policy" and config.lmbda < 1
        )
    )
    if needs_stored_topk and top_k == 0:
        raise StoreError(
            f"{config.data}: store has no teacher logprobs (top_k 0); "
            "use --objective sft, or capture with --top-k 20"
        )
    text_cross = config.objective == "cross_tokenizer" and store.is_text  # its own teacher
    if config.objective != "sft" and not text_cross and not is_http_teacher(config.teacher):
        refuse_other_teacher(
            store.fingerprint,
            config.teacher,
            config.data,
            config.objective,
            config.allow_other_teacher,
        )
    scorer = None
    if is_http_teacher(config.teacher):
        scorer = RemoteScorer.connect(config, top_k or REMOTE_TOP_K)
        if tokenizer_hash(scorer.teacher.tokenizer) != store.fingerprint.get("tokenizer_sha256"):
            raise ModelError(
                f"tokenizer {config.tokenizer or config.teacher_model}: differs from the one "
                f"that made {config.data}; give the teacher's own tokenizer"
            )

    pruning = parse_prune_spec(config.student)
    plan = ForwardPlan.of(config)
    if teacher is None and (plan.needs_teacher or pruning is not None or live):
        teacher = LocalTeacher.load(config.teacher)
    kept = None
    if student is None and pruning is not None:
        student, kept = _pruned_student(config, store, rows, teacher, pruning)
        tokenizer = teacher.tokenizer
    elif student is None:
        # The vocabulary check against the teacher happens below, for given students too.
        student, tokenizer = load_student(config.student, None)
    else:
        pruned_here = pruning is not None
        tokenizer = teacher.tokenizer if pruned_here else load_tokenizer(resolve(config.student))

    student_rows = student.get_input_embeddings().weight.shape[0]
    vocab_size = student_rows
    # cross_tokenizer compares tokens through their bytes: the vocabularies may differ
    if teacher is not None and config.objective != "cross_tokenizer":
        teacher_rows = teacher.model.get_input_embeddings().weight.shape[0]
        vocab_size = shared_vocab_size(teacher.tokenizer, tokenizer, teacher_rows, student_rows)
    if teacher_ids:
        rows = token_rows_as_text(rows, _store_tokenizer(config, store))
    if store.is_text or teacher_ids:  # any student: the text is tokenized with its own tokenizer
        cross = config.objective == "cross_tokenizer"
        rows = rows_in_student_tokens(
            rows, tokenizer, config.data, cross_tokenizer=cross and not live
        )
    elif tokenizer_hash(tokenizer) != store.fingerprint.get("tokenizer_sha256"):
        raise ModelError(
            f"--student {config.student}: its tokenizer differs from the one that made "
            f"{config.data}; the student must share the teacher's tokenizer"
        )
    # Fused KD rebuilds logits from the last hidden state and the head weight: both heads must
    # be plain linear maps, else fall back to materialized logits.
    fused = plan.teacher_hidden and config.objective in LIVE_TEACHER and config.fused
    if fused and not (fused_head_matches(student) and fused_head_matches(teacher.model)):
        log.warning("fused KD does not reproduce this model's logits; using full logits")
        plan = ForwardPlan.of(config, fused_ok=False)
    layer_map, projector = None, None
    if config.hidden_weight > 0:
        copied = kept.get("layers") if kept else None
        layer_map, projector = _hidden_matching(config, student, teacher.model, copied)
    # before LoRA wraps the student: the probe runs the plain model
    pack = packing_for(
        config.pack, {"student": student, "teacher": teacher.model if plan.needs_teacher else None}
    )
    if config.lora is not None:
        student = add_lora(student, config.lora, seed=config.seed)
    live_targets = None
    if live:
        live_targets = LiveTeacherTargets.of(
            teacher.model, teacher.tokenizer, tokenizer, config.live_top_k
        )
    return RunParts(
        store,
        rows,
        student,
        tokenizer,
        teacher,
        vocab_size,
        top_k,
        plan,
        layer_map,
        projector,
        scorer,
        live_targets,
        pack,
        kept,
    )


def _pruned_student(
    config: DistillConfig,
    store: Store,
    rows: list[dict[str, Any]],
    teacher: LocalTeacher,
    spec: PruneSpec,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """The ``prune:`` student and what it kept; a resumed run rebuilds it from its
    ``pruned.json`` instead of measuring importance again."""
    record = config.out / PRUNED_FILE
    kept = json.loads(record.read_text()) if record.is_file() else None
    if kept is not None and kept.get("spec") != spec.text:
        kept = None  # a folder that may start again, of another student: measure anew
    calibration = None
    if kept is None and spec.needs_calibration:
        calibration = _calibration(config, store, rows, teacher)
    return pruned(teacher.model, spec, calibration, kept)


def _calibration(
    config: DistillConfig, store: Store, rows: list[dict[str, Any]], teacher: LocalTeacher
) -> list[list[int]]:
    """Rows of the store in the teacher's tokens, to measure a pruned student's importance on."""
    if store.is_text:  # its text, in the teacher's tokens and chat template (only the rows read)
        chosen = spread(rows, config.prune_calibration)
        rows = rows_in_student_tokens(chosen, teacher.tokenizer, config.data)
    elif tokenizer_hash(teacher.tokenizer) != store.fingerprint.get("tokenizer_sha256"):
        raise StoreError(
            f"{config.data}: its token ids are not in --teacher {config.teacher}'s tokens, "
            "which importance pruning reads; give the teacher that made it, or prune:N"
        )
    return calibration_sequences(rows, config.prune_calibration, config.max_seq_len, config.data)


def _store_tokenizer(config: DistillConfig, store: Store) -> PreTrainedTokenizerBase:
    """The tokenizer of the teacher that made a token store (checked against its hash)."""
    tokenizer = load_tokenizer(resolve(config.teacher))
    if tokenizer_hash(tokenizer) != store.fingerprint.get("tokenizer_sha256"):
        raise ModelError(
            f"--teacher {config.teacher}: its tokenizer is not the one that made "
            f"{config.data}; give the teacher that made the store"
        )
    return tokenizer


def refuse_other_teacher(
    fingerprint: dict[str, Any], teacher: str, data: Any, objective: str, allowed: bool = False
) -> None:
    """A store another teacher wrote is not this teacher's distribution: refuse it (naming
    both) unless the user said ``--allow-other-teacher``."""
    if allowed:
        return
    differs = other_teacher(fingerprint, resolve(teacher).identity())
    if differs is not None:
        raise StoreError(
            f"{data}: written by another teacher than --teacher {teacher} ({differs}); give "
            f"the teacher that made it, or --allow-other-teacher for {objective} against it"
        )


def _hidden_matching(
    config: DistillConfig,
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    copied: list[int] | None = None,
) -> tuple[list[int], HiddenProjector]:
    """The layer map and projection of hidden-state matching. A pruned student's layers
    (``copied``: the teacher layers they are copies of) are matched to their originals, the
    last to the teacher's last: both are read after the final norm (``hidden_states[-1]``)."""
    student_layers = student.config.num_hidden_layers
    teacher_layers = teacher.config.num_hidden_layers
    layer_map = config.layer_map
    if layer_map is None and copied:
        layer_map = [*(i + 1 for i in copied[:-1]), teacher_layers]
    layer_map = layer_map or default_layer_map(student_layers, teacher_layers)
    if len(layer_map) != student_layers or not all(1 <= t <= teacher_layers for t in layer_map):
        raise ConfigError(
            f"layer_map: give {student_layers} teacher layers (1..{teacher_layers}), one per "
            f"student layer; got {layer_map}"
        )
    # Initialised from the run's seed alone: the loop seeds the global generator only after
    # this, so the projector once depended on whatever ran before. fork_rng leaves the global
    # stream as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        projector = HiddenProjector(
            student.config.hidden_size, teacher.config.hidden_size, len(layer_map)
        )
    return layer_map, projector.to(next(student.parameters()).dtype)
