"""The learning-rate schedule: linear warmup, then cosine decay to zero over the run's budget.

The budget is ``max_steps``, or with ``max_tokens`` the target tokens trained so far, so that
objectives whose batches differ in length (on-policy samples against stored completions) can be
compared at the same number of training tokens.
"""

from __future__ import annotations

import math

import torch

from retort.config import DistillConfig


class BudgetSchedule:
    """``factor(step)`` multiplies the peak learning rate; ``tokens`` is updated by the loop."""

    def __init__(self, config: DistillConfig) -> None:
        self.warmup = config.warmup_steps
        self.max_steps = config.max_steps
        self.max_tokens = config.max_tokens
        self.tokens = 0

    def progress(self, step: int) -> float:
        """Fraction of the budget spent, in [0, 1]."""
        if self.max_tokens:
            return min(self.tokens / self.max_tokens, 1.0)
        return min(step / self.max_steps, 1.0)

    def finished(self, step: int) -> bool:
        return step >= self.max_steps or (self.max_tokens is not None and self.progress(step) >= 1)

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return float(step) / float(max(1, self.warmup))
        if self.max_tokens:
            done = self.progress(step)
        else:  # the same arithmetic as transformers' get_cosine_schedule_with_warmup
            done = float(step - self.warmup) / float(max(1, self.max_steps - self.warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * done)))

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)
