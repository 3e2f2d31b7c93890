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
        self.tokens = 0  # target tokens trained so far (the loop adds each step's)
        self.warmup_tokens: int | None = None  # tokens trained by the end of warmup

    def finished(self, step: int) -> bool:
        spent = self.max_tokens is not None and self.tokens >= self.max_tokens
        return step >= self.max_steps or spent

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return float(step) / float(max(1, self.warmup))
        if self.max_tokens:  # the decay spans the budget left after warmup
            if self.warmup_tokens is None:
                self.warmup_tokens = self.tokens
            left = max(self.max_tokens - self.warmup_tokens, 1)
            done = min((self.tokens - self.warmup_tokens) / left, 1.0)
        else:  # the same arithmetic as transformers' get_cosine_schedule_with_warmup
            done = float(step - self.warmup) / float(max(1, self.max_steps - self.warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * done)))

    def state_dict(self) -> dict[str, int | None]:
        return {"tokens": self.tokens, "warmup_tokens": self.warmup_tokens}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        self.tokens = int(state.get("tokens") or 0)
        self.warmup_tokens = state.get("warmup_tokens")

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)
