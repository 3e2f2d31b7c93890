"""The learning-rate schedule: step budgets match transformers' cosine exactly; token budgets
decay from the end of warmup to zero at the budget."""

from __future__ import annotations

import itertools

import torch
from transformers import get_cosine_schedule_with_warmup

from retort.config import DistillConfig
from retort.train.schedule import BudgetSchedule


def config(**values) -> DistillConfig:
    return DistillConfig(data="s", out="o", student="x", objective="sft", **values)


def learning_rates(scheduler, steps, on_step=lambda step: None) -> list[float]:
    rates = []
    for step in range(steps):
        on_step(step)
        scheduler.optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    return rates


def optimizer() -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)


def test_a_step_budget_is_transformers_cosine_with_warmup():
    ours = BudgetSchedule(config(warmup_steps=7, max_steps=120)).scheduler(optimizer())
    theirs = get_cosine_schedule_with_warmup(optimizer(), 7, 120)
    assert learning_rates(ours, 120) == learning_rates(theirs, 120)


def test_a_token_budget_decays_smoothly_after_warmup_to_zero_at_the_budget():
    schedule = BudgetSchedule(config(warmup_steps=5, max_tokens=1000, max_steps=None))
    scheduler = schedule.scheduler(optimizer())

    def train_100_tokens(step: int) -> None:
        schedule.tokens += 100

    rates = learning_rates(scheduler, 10, train_100_tokens)
    assert rates[:5] == [2e-4, 4e-4, 6e-4, 8e-4, 1e-3]  # warmup, then the peak exactly
    assert all(a > b for a, b in itertools.pairwise(rates[4:]))  # decays, no jump
    assert rates[-1] == 0.0 and schedule.finished(10)
