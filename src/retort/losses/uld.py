"""Universal Logit Distillation (Boizard et al., 2024) over the groups two tokenizers split
differently.

ULD compares two next-token distributions without a shared vocabulary: both are sorted, and the
loss is the L1 distance between the sorted probability vectors (the Wasserstein distance when
outcomes are ranked by probability). Here the teacher is known by its top-k only, so the
student's top-k (same k) is compared entry by entry and the rest of each side's mass as one
more entry: a lower bound of the full-vocabulary distance, equal to it when k covers both.
Each group's distributions are first multiplied by the probability of the group's other
actual tokens (``chain``, GOLD's merge), so a word the teacher writes as one token and the
student as three is compared as the word's probability, not its first piece's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def uld_groups_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    heads: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_chain: torch.Tensor,
) -> tuple[torch.Tensor, int]:
    """Summed ULD distance over a batch's groups, and the number of groups.

    Args (all aligned with the logits, i.e. already shifted: position t predicts ``targets[t]``):
        student_logits: ``(B, T, V)``.
        targets: ``(B, T)`` the tokens the student's positions predict.
        heads: ``(B, T)`` -1 outside groups, else the position of the group's first token.
        teacher_logprobs: ``(B, T, k)`` at first positions: the teacher's sorted top-k
            (``-inf`` for missing entries).
        teacher_chain: ``(B, T)`` at first positions: log P(the teacher's other tokens).
    """
    batch, width = heads.shape
    own = torch.arange(width, device=heads.device).expand(batch, width)
    first = heads == own
    members = (heads >= 0) & ~first
    count = int(first.sum())
    if count == 0:
        return student_logits.sum() * 0.0, 0
    # The student's chain: its logprob of each group's other actual tokens, summed at the head.
    member_logprob = -F.cross_entropy(
        student_logits[members].float(), targets[members], reduction="none"
    )
    flat_heads = heads + width * torch.arange(batch, device=heads.device)[:, None]
    chain = torch.zeros(batch * width, device=student_logits.device, dtype=member_logprob.dtype)
    chain = chain.index_add(0, flat_heads[members], member_logprob)
    student_chain = chain.view(batch, width)[first]  # (G,)
    k = teacher_logprobs.shape[-1]
    log_s = torch.log_softmax(student_logits[first].float(), dim=-1)  # (G, V)
    top_s = log_s.topk(min(k, log_s.shape[-1]), dim=-1).values  # (G, k), sorted
    s_probs = (top_s + student_chain[:, None]).exp()
    t_logprobs = teacher_logprobs[first].float()
    t_chain = teacher_chain[first].float()
    t_probs = torch.where(
        torch.isfinite(t_logprobs),
        (t_logprobs + t_chain[:, None]).exp(),
        torch.zeros_like(t_logprobs),
    )
    if t_probs.shape[-1] > s_probs.shape[-1]:
        t_probs = t_probs[:, : s_probs.shape[-1]]
    s_rest = student_chain.exp() - s_probs.sum(-1)
    t_rest = t_chain.exp() - t_probs.sum(-1)
    distance = (s_probs - t_probs).abs().sum(-1) + (s_rest - t_rest).abs()
    return distance.sum(), count
