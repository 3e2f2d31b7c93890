"""The report's figures, drawn with matplotlib and returned as inline SVG text (no files, no
network: the page stays one self-contained file). Each function returns None when there is
nothing to draw, and the page says so instead of showing an empty frame."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from retort.report.sources import Run

WIDE = (7.5, 3.2)
LOSS_TERMS = ("loss", "ce", "kd", "uld", "hidden")  # metrics.jsonl per-token terms, when logged
HELDOUT = (("nll", "held-out NLL ↓"), ("top1_agreement", "top-1 agreement ↑"), ("kl", "KL ↓"))


def svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element (text kept as text, so it is small and selectable)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(columns: int = 1, size: tuple[float, float] = WIDE) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True})
    figure, axes = plt.subplots(1, columns, figsize=size, squeeze=False)
    return figure, axes[0]


def loss_curves(runs: list[Run]) -> str | None:
    """Each loss term of each run over the target tokens trained (a moving mean over ~2 % of
    the steps over the raw per-step values, which are noisy)."""
    terms = [t for t in LOSS_TERMS if any(t in r for run in runs for r in run.train)]
    if not terms:
        return None
    figure, axes = _figure(len(terms), (3.2 * len(terms), 3.0))
    for axis, term in zip(axes, terms, strict=True):
        for run in runs:
            points = [(r.get("tokens_seen", r["step"]), r[term]) for r in run.train if term in r]
            if not points:
                continue
            x, y = zip(*points, strict=True)
            (line,) = axis.plot(x, y, alpha=0.25, linewidth=0.8)
            axis.plot(x, _moving_mean(y), color=line.get_color(), label=run.name)
        axis.set_title(term)
        axis.set_xlabel("target tokens trained")
    axes[0].legend(fontsize=7)
    return svg(figure)


def heldout_curves(runs: list[Run]) -> str | None:
    """The held-out scores written during training (--eval-data), over tokens trained."""
    metrics = [(k, t) for k, t in HELDOUT if any(k in r for run in runs for r in run.heldout)]
    if not metrics:
        return None
    figure, axes = _figure(len(metrics), (3.2 * len(metrics), 3.0))
    for axis, (key, title) in zip(axes, metrics, strict=True):
        for run in runs:
            points = [(r["tokens_seen"], r[key]) for r in run.heldout if key in r]
            if points:
                x, y = zip(*points, strict=True)
                axis.plot(x, y, marker="o", markersize=3, label=run.name)
        axis.set_title(title)
        axis.set_xlabel("target tokens trained")
    axes[0].legend(fontsize=7)
    return svg(figure)


def by_position(models: list[dict[str, Any]]) -> str | None:
    """Top-1 agreement and KL by position in the completion: where answers drift."""
    scored = [m for m in models if m.get("by_position")]
    if not scored:
        return None
    figure, axes = _figure(2)
    for model in scored:
        curve = model["by_position"]
        x = [curve["bin"] * (i + 0.5) for i in range(len(curve["tokens"]))]
        axes[0].plot(x, curve["top1_agreement"], marker=".", label=model["name"])
        axes[1].plot(x, curve["kl"], marker=".", label=model["name"])
    axes[0].set_title("top-1 agreement by position ↑")
    axes[1].set_title("KL(teacher ‖ model) by position ↓")
    for axis in axes:
        axis.set_xlabel("token position in the completion")
    axes[0].legend(fontsize=7)
    return svg(figure)


def nll_histograms(models: list[dict[str, Any]]) -> str | None:
    """Per-example mean NLL of the teacher's completions, one outline per model."""
    scored = [m for m in models if m.get("row_nll")]
    if not scored:
        return None
    figure, axes = _figure()
    values = [v for m in scored for v in m["row_nll"]]
    bins = _bins(min(values), max(values))
    for model in scored:
        axes[0].hist(
            model["row_nll"], bins=bins, histtype="step", linewidth=1.4, label=model["name"]
        )
    axes[0].set_xlabel("mean NLL of one held-out completion (nats/token)")
    axes[0].set_ylabel("completions")
    axes[0].legend(fontsize=7)
    return svg(figure)


def quality_size_speed(models: list[dict[str, Any]]) -> str | None:
    """Held-out NLL against parameters and against greedy tokens/s (batch 1)."""
    if not models:
        return None
    figure, axes = _figure(2)
    for model in models:
        nll = model["nll"]
        axes[0].scatter(model["parameters"] / 1e6, nll)
        axes[0].annotate(model["name"], (model["parameters"] / 1e6, nll), fontsize=7)
        speed = model.get("tokens_per_s_batch1")
        if speed:
            axes[1].scatter(speed, nll)
            axes[1].annotate(model["name"], (speed, nll), fontsize=7)
    axes[0].set_xlabel("parameters (millions)")
    axes[1].set_xlabel("greedy tokens/s, batch 1")
    for axis in axes:
        axis.set_ylabel("held-out NLL ↓")
    return svg(figure)


def _moving_mean(values: tuple[float, ...]) -> list[float]:
    width = max(1, len(values) // 50)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def _bins(low: float, high: float, count: int = 30) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low - 0.5, low + 0.5]
    step = (high - low) / count
    return [low + step * i for i in range(count + 1)]
