"""Markdown tables of ``bench/results/watermark.json`` (printed by ``bench/watermark.py``)."""

from __future__ import annotations

from typing import Any

import watermark_null as null

LEVELS = (1e-3, 1e-4)


def markdown(results: dict[str, Any]) -> str:
    """The calibration, power and cost tables, in that order."""
    parts = (results["calibration"], results["power"], results["cost"])
    tables = (calibration_table, power_table, cost_table)
    return "\n\n".join(table(part) for table, part in zip(tables, parts, strict=True))


def calibration_table(cal: dict[str, Any]) -> str:
    texts = cal["texts"]
    head = (
        f"Null tests: {texts['human']} human passages + {texts['model']} unwatermarked "
        f"teacher completions, each with {cal['keys_per_text']} fresh keys of its own per "
        "scheme (no key shared between texts, so the tests are independent).\n\n"
        "| scheme | tokens scored | tests | KS p (randomized) | KS p (raw) | "
        "FPR@1e-3 exact | FPR@1e-3 normal | FPR@1e-4 exact | FPR@1e-4 normal |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for scheme in (k for k in cal if k.startswith(("kgw", "gumbel"))):
        rows = [("all", cal[scheme]["all"])]
        rows += [(name, cal[scheme]["buckets"][name]) for _, _, name in null.BUCKETS]
        for bucket, row in rows:
            if not row.get("tests"):
                continue
            cells = [scheme, bucket, str(row["tests"])]
            cells += [_p(row["ks_randomized"]["p_value"]), _p(row["ks_exact"]["p_value"])]
            for level in LEVELS:
                for kind in ("exact", "normal"):
                    cells.append(_rate(row, kind, level))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + fixed_key_table(cal)


def fixed_key_table(cal: dict[str, Any]) -> str:
    """Per-key rates when every text is tested with the same key (one provider's view)."""
    lines = [
        "One key for every text (each of the fixed keys tested on all null texts):\n",
        "| scheme | keys | FPR@1e-2: mean (min - max over keys) | FPR@1e-3: mean | "
        "SD over keys of the mean z |",
        "|---|---:|---|---:|---:|",
    ]
    for scheme in (k for k in cal if k.startswith(("kgw", "gumbel"))):
        row = cal[scheme].get("fixed_key")
        if not row:
            continue
        lines.append(
            f"| {scheme} | {row['keys']} | {row['fpr_0.01_mean']:.2e} "
            f"({row['fpr_0.01_min']:.2e} - {row['fpr_0.01_max']:.2e}) | "
            f"{row['fpr_0.001_mean']:.2e} | {row['mean_z_sd']:.3f} |"
        )
    return "\n".join(lines)


def power_table(power: dict[str, Any]) -> str:
    lines = [
        "| setting | texts | mean tokens | tokens to p<1e-6: median / p90 (reached) | full | "
        "first 25 | first 50 | first 100 | first 100 of texts >= 100 | "
        "10 % edits | 25 % edits | 50 % edits | paraphrase |",
        "|---|---:|---:|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, e in power.items():
        need = e["tokens_needed"]
        cells = [
            setting,
            str(e["texts"]),
            f"{e['mean_tokens']:.0f}",
            f"{need['median']} / {need['p90']} ({need['reached']}/{need['texts']})",
        ]
        for name in ("full", "truncated_25", "truncated_50", "truncated_100"):
            cells.append(_det(e[name]))
        cells.append(f"{_det(e['long_100'])} (n={e['long_100']['texts']})")
        cells += [_det(e[f"edited_{f}"]) for f in (10, 25, 50)]
        para = e.get("paraphrased")
        cells.append(f"{_det(para)} (n={para['texts']})" if para else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "Detection cells: share with p < 1e-6 / share with p < 1e-3.\n\n" + "\n".join(lines)


def cost_table(cost: dict[str, Any]) -> str:
    lines = [
        "| setting | NLL/token: none -> watermarked (diff, 95 % CI, paired t p) | "
        "accuracy: none -> watermarked (diff, 95 % CI, McNemar p, prompts) |",
        "|---|---|---|",
    ]
    for setting, e in cost.items():
        nll, acc = e["nll"], e["accuracy"]
        nll_cell = (
            f"{nll['a']:.3f} -> {nll['b']:.3f} ({nll['diff']:+.3f}, "
            f"[{nll['ci95'][0]:+.3f}, {nll['ci95'][1]:+.3f}], p={_p(nll['p_value'])})"
        )
        acc_cell = (
            f"{acc['a']:.1%} -> {acc['b']:.1%} ({acc['diff']:+.1%}, "
            f"[{acc['ci95'][0]:+.1%}, {acc['ci95'][1]:+.1%}], p={_p(acc['mcnemar_p'])}, "
            f"n={acc['prompts']})"
        )
        lines.append(f"| {setting} | {nll_cell} | {acc_cell} |")
    return "\n".join(lines)


def _rate(row: dict[str, Any], kind: str, level: float) -> str:
    hits, upper = row[f"hits_{kind}_{level:g}"], row[f"upper95_{kind}_{level:g}"]
    return f"{hits / row['tests']:.1e} ({hits}; <={upper:.1e})"


def _det(rates: dict[str, float]) -> str:
    return f"{rates['p<1e-6']:.0%} / {rates['p<1e-3']:.0%}"


def _p(value: float) -> str:
    return f"{value:.2g}"
