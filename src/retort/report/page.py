"""``retort report``: one self-contained HTML page of what a student kept.

Inline CSS and inline SVG only: no scripts, no fonts, no network, so the file opens from disk
anywhere and can be mailed or attached to a PR. Sections appear when their data exists and say
what is missing otherwise (an eval-less report still shows the training curves).
"""

from __future__ import annotations

import difflib
import html
import json
import time
from pathlib import Path
from typing import Any

import yaml

from retort.cli.console import fmt
from retort.report import plots
from retort.report.sources import Sources

TEACHER = "teacher"
BASELINE_HINTS = ("before", "untrained", "prune:")  # a student's starting point in eval.json
SAMPLES_SHOWN = 8
JUDGE_EXAMPLES = 6

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1100px;padding:24px;color:#1d2330;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid
#dde2ea;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.meta,.note{color:#5b6474}.note{font-size:13px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f3f5f9}td.name,th.name{text-align:left}
figure{margin:8px 0}figure svg{max-width:100%;height:auto}
.sample{border:1px solid #dde2ea;border-radius:6px;padding:8px 12px;margin:10px 0}
.answers{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:8px}
.answer{background:#f8f9fb;border-radius:4px;padding:6px 8px;white-space:pre-wrap}
.answer b{display:block;font-size:12px;color:#5b6474}
mark{background:#ffe9a8}del{color:#b3261e}
pre{background:#f8f9fb;padding:8px;overflow:auto;font-size:12px}
"""


def render(sources: Sources, title: str = "retort report") -> str:
    """The whole page as a string."""
    sections = [
        _comparison(sources),
        _section("Loss over training", plots.loss_curves(sources.runs), _no_runs(sources)),
        _section(
            "Held-out metrics over training",
            plots.heldout_curves(sources.runs),
            "no held-out scores in metrics.jsonl: train with --eval-data STORE --eval-every N",
        ),
        _section("Agreement and KL by position", _eval_plot(sources, plots.by_position), _NO_EVAL),
        _section(
            "NLL per held-out completion", _eval_plot(sources, plots.nll_histograms), _NO_EVAL
        ),
        _section(
            "Quality, size and speed", _eval_plot(sources, plots.quality_size_speed), _NO_EVAL
        ),
        _samples(sources),
        _judges(sources),
        _configs(sources),
    ]
    made = time.strftime("%Y-%m-%d %H:%M")
    runs = ", ".join(html.escape(r.name) for r in sources.runs) or "none"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='meta'>runs: {runs} · written {made} by "
        "retort report</p>" + "".join(sections) + "</body></html>\n"
    )


def write(sources: Sources, out: Path, title: str = "retort report") -> Path:
    """Render and write ``out`` whole (a partial file is never left in its place)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(render(sources, title), encoding="utf-8")
    partial.replace(out)
    return out


_NO_EVAL = "no eval.json given: run retort eval --out FOLDER and pass --eval FOLDER/eval.json"


def _no_runs(sources: Sources) -> str:
    return "no run folders given" if not sources.runs else "no loss terms in metrics.jsonl"


def _section(title: str, figure: str | None, missing: str) -> str:
    body = f"<figure>{figure}</figure>" if figure else f"<p class='note'>{html.escape(missing)}</p>"
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _eval_plot(sources: Sources, draw: Any) -> str | None:
    figures = [draw(report["models"]) for _, report in sources.evals]
    figures = [f for f in figures if f]
    return "".join(figures) or None


def gap_closed(models: list[dict[str, Any]]) -> dict[str, float]:
    """Share of the NLL gap between the starting point and the teacher that each trained
    student closed: (NLL_start − NLL_student) / (NLL_start − NLL_teacher)."""
    teacher = next((m for m in models if m["name"] == TEACHER), None)
    start = next((m for m in models if any(h in m["name"] for h in BASELINE_HINTS)), None)
    if teacher is None or start is None or start["nll"] <= teacher["nll"]:
        return {}
    span = start["nll"] - teacher["nll"]
    return {
        m["name"]: (start["nll"] - m["nll"]) / span
        for m in models
        if m is not teacher and m is not start
    }


def _comparison(sources: Sources) -> str:
    if not sources.evals:
        return f"<section><h2>Side by side</h2><p class='note'>{_NO_EVAL}</p></section>"
    parts = ["<section><h2>Side by side</h2>"]
    for path, report in sources.evals:
        models = report["models"]
        closed = gap_closed(models)
        references = max((m.get("reference_count") or 0 for m in models), default=0)
        parts.append(
            f"<p class='meta'>{html.escape(str(path))}: {report.get('rows', '?')} held-out "
            f"rows, {report.get('target_tokens', '?')} teacher tokens, {references} with a "
            "reference answer</p>"
        )
        header = (
            "model", "params", "NLL ↓", "gap closed", "top-1 ↑", "KL ↓", "accuracy ↑",
            "T-NLL ↓", "tok/s b1", "tok/s b8",
        )  # fmt: skip
        rows = []
        for m in models:
            accuracy = m.get("contains_match")
            rows.append(
                [
                    m["name"],
                    f"{m['parameters'] / 1e6:.1f}M",
                    fmt(m.get("nll")),
                    f"{closed[m['name']] * 100:.0f} %" if m["name"] in closed else "-",
                    fmt(m.get("top1_agreement")),
                    fmt(m.get("kl")),
                    "-" if accuracy is None else f"{accuracy:.2f}",
                    fmt(m.get("teacher_nll_of_answers")),
                    fmt(m.get("tokens_per_s_batch1"), 1),
                    fmt(m.get("tokens_per_s_batch8"), 1),
                ]
            )
        parts.append(_table(header, rows))
    parts.append(
        "<p class='note'>NLL: the model's mean negative log-likelihood of the teacher's "
        "held-out tokens. Gap closed: share of the NLL gap between the student's starting "
        "point and the teacher that training closed. T-NLL: the teacher's NLL of the model's "
        "own greedy answers (how much the teacher likes what it writes).</p></section>"
    )
    return "".join(parts)


def _samples(sources: Sources) -> str:
    parts = ["<section><h2>Answers side by side</h2>"]
    shown = 0
    for _, report in sources.evals:
        for sample in report.get("samples", [])[:SAMPLES_SHOWN]:
            parts.append(_sample(sample))
            shown += 1
    if not shown:
        parts.append(f"<p class='note'>{_NO_EVAL}</p>")
    else:
        parts.append(
            "<p class='note'>Highlighted: words a model wrote that the teacher's answer does "
            "not have at that place; struck through: the teacher's words it left out.</p>"
        )
    return "".join(parts) + "</section>"


def _sample(sample: dict[str, Any]) -> str:
    answers = sample.get("answers", {})
    teacher = answers.get(TEACHER, "")
    cells = []
    for name, text in answers.items():
        body = html.escape(text) if name == TEACHER else word_diff(teacher, text)
        if not text.strip():
            body = "<span class='note'>(empty answer)</span>"
        cells.append(f"<div class='answer'><b>{html.escape(name)}</b>{body}</div>")
    reference = sample.get("reference")
    extra = f"<p class='meta'>reference: {html.escape(str(reference))}</p>" if reference else ""
    return (
        f"<div class='sample'><h3>{html.escape(str(sample.get('id', '')))}</h3>"
        f"<p>{html.escape(str(sample.get('prompt', '')))}</p>{extra}"
        f"<div class='answers'>{''.join(cells)}</div></div>"
    )


def word_diff(reference: str, text: str) -> str:
    """``text`` as HTML with the words it adds or changes against ``reference`` in <mark>
    and the reference's words it drops in <del>."""
    ours, theirs = text.split(" "), reference.split(" ")
    out = []
    matcher = difflib.SequenceMatcher(a=theirs, b=ours, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(ours[b0:b1])))
            continue
        if a1 > a0:
            out.append(f"<del>{html.escape(' '.join(theirs[a0:a1]))}</del>")
        if b1 > b0:
            out.append(f"<mark>{html.escape(' '.join(ours[b0:b1]))}</mark>")
    return " ".join(out)


def _judges(sources: Sources) -> str:
    parts = ["<section><h2>Judge verdicts</h2>"]
    if not sources.judges:
        parts.append(
            "<p class='note'>no judge.json given: run retort judge --out FOLDER and pass "
            "--judge FOLDER/judge.json</p>"
        )
    for path, summary in sources.judges:
        pairwise = summary["pairwise"]
        a, b = html.escape(str(summary.get("a"))), html.escape(str(summary.get("b")))
        parts.append(
            f"<p class='meta'>{html.escape(str(path))}: judge "
            f"{html.escape(str(summary.get('judge')))}, {summary.get('prompts', '?')} prompts, "
            "both answer orders</p>"
        )
        header = ("A", "B", "A wins", "B wins", "ties", "unparsable", "A win rate", "95 % interval")
        row = [
            a,
            b,
            str(pairwise.get("a_wins")),
            str(pairwise.get("b_wins")),
            str(pairwise.get("ties")),
            str(pairwise.get("unparsable")),
            fmt(pairwise.get("win_rate_a"), 2),
            f"{fmt(pairwise.get('ci_low'), 2)} – {fmt(pairwise.get('ci_high'), 2)}",
        ]
        parts.append(_table(header, [row], escape=False))
        graded = summary.get("graded") or {}
        if graded:
            rows = [
                [html.escape(str(summary.get(side, side))), str(g.get("correct")),
                 str(g.get("graded")), fmt(g.get("accuracy"), 2),
                 f"{fmt(g.get('ci_low'), 2)} – {fmt(g.get('ci_high'), 2)}"]
                for side, g in graded.items()
            ]  # fmt: skip
            header = ("model", "correct", "graded", "accuracy", "95 % interval")
            parts.append(_table(header, rows, escape=False))
        for example in summary.get("examples", [])[:JUDGE_EXAMPLES]:
            parts.append(
                f"<div class='sample'><h3>{html.escape(str(example.get('id', '')))}: verdict "
                f"{html.escape(str(example.get('verdict')))}</h3>"
                f"<p>{html.escape(str(example.get('prompt', '')))}</p><div class='answers'>"
                f"<div class='answer'><b>A: {a}</b>{html.escape(str(example.get('answer_a', '')))}"
                f"</div><div class='answer'><b>B: {b}</b>"
                f"{html.escape(str(example.get('answer_b', '')))}</div></div></div>"
            )
    return "".join(parts) + "</section>"


def _configs(sources: Sources) -> str:
    parts = ["<section><h2>Configuration and data</h2>"]
    for run in sources.runs:
        parts.append(f"<h3>{html.escape(run.name)} <span class='meta'>({run.path})</span></h3>")
        parts.append(
            f"<pre>{html.escape(yaml.safe_dump(run.config, sort_keys=False) or '(no config.yaml)')}"
            "</pre>"
        )
        if run.fingerprint:
            fingerprint = json.dumps(run.fingerprint, indent=1)
            parts.append(
                "<p class='meta'>training store fingerprint</p>"
                f"<pre>{html.escape(fingerprint)}</pre>"
            )
        else:
            parts.append("<p class='note'>training store not found: no fingerprint shown</p>")
    if not sources.runs:
        parts.append("<p class='note'>no run folders given</p>")
    return "".join(parts) + "</section>"


def _table(header: tuple[str, ...], rows: list[list[str]], escape: bool = True) -> str:
    cls = lambda i: " class='name'" if i == 0 else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f"<td{cls(i)}>{html.escape(c) if escape else c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
