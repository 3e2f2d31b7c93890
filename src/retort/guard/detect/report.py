"""A scan's results for people: a rich summary table for the terminal and one self-contained
HTML page (inline CSS, no scripts) for a trust-and-safety analyst to read or pass on.

Every string that came from a log (keys, prompts in reasons, file names, problems) is escaped
with ``html.escape``: the log is written by whoever holds a key, attackers included."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from retort.guard.detect.scan import KeyScore, ScanResult

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .6em; text-align: left;
  vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.flag { color: #b00020; font-weight: 600; } .muted { color: #777; }
code { font-size: .95em; }
details { margin: .3em 0; }
"""


def score_records(result: ScanResult) -> list[dict]:
    """One JSON-ready object per key, in the result's order (score desc, then key): key,
    score, flagged, reasons [{feature, value, words}], cluster, requests, first_flag_at.
    Numbers are rounded to 6 digits so that the file reads well and compares byte for byte."""
    return [
        {
            "key": k.key,
            "score": round(k.score, 6),
            "flagged": k.flagged,
            "reasons": [
                {"feature": r.feature, "value": _number(r.value), "words": r.words}
                for r in k.reasons
            ],
            "cluster": k.cluster,
            "requests": k.requests,
            "first_flag_at": k.first_flag_at,
        }
        for k in result.keys
    ]


def write_scores(result: ScanResult, path: str | Path) -> Path:
    """Write the scores JSONL to ``path`` atomically (a temporary file renamed over it)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in score_records(result))
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


def summary_line(result: ScanResult) -> str:
    """One line: keys scanned, flagged, clusters, bad log lines."""
    bad = result.log.bad
    clusters = len(result.clusters)
    flagged_clusters = sum(c.flagged for c in result.clusters)
    return (
        f"{len(result.keys)} keys scanned ({result.log.read} requests), "
        f"{len(result.flagged)} flagged at score ≥ {result.flag_at:g}; "
        f"{clusters} cluster{'s' if clusters != 1 else ''} ({flagged_clusters} flagged); "
        f"{bad} bad log line{'s' if bad != 1 else ''}"
    )


def summary_table(result: ScanResult, top: int = 20) -> Table:
    """The ``top`` highest-scoring keys: key, score, flagged, cluster, requests, top reason;
    the summary line is the caption."""
    table = Table(title=f"keys by score (top {min(top, len(result.keys))})")
    for column in ("key", "score", "flagged", "cluster", "requests", "top reason"):
        table.add_column(column, justify="right" if column in ("score", "requests") else "left")
    for k in result.keys[:top]:  # keys come from the log: escaped, never read as markup
        table.add_row(
            escape(k.key),
            f"{k.score:.3f}",
            "[bold red]yes[/]" if k.flagged else "no",
            k.cluster or "-",
            str(k.requests),
            escape(k.reasons[0].words) if k.reasons else "-",
        )
    table.caption = summary_line(result)
    return table


def write_html(result: ScanResult, path: str | Path) -> Path:
    """Write the report page to ``path`` (atomically: a partial page never replaces a good
    one); returns the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(result), encoding="utf-8")
    os.replace(tmp, path)
    return path


def render_html(result: ScanResult) -> str:
    """The report page as one string."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>retort guard scan</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Extraction scan</h1>",
        f"<p>{e(summary_line(result))}</p>",
        "<ul>",
        f"<li>weights: <code>{e(result.weights)}</code></li>",
        f"<li>embedder: <code>{e(result.embedder or 'none')}</code></li>",
        *(f"<li>{e(note)}</li>" for note in result.notes),
        "</ul>",
        "<h2>Flagged keys</h2>",
    ]
    flagged = result.flagged
    if not flagged:
        parts.append('<p class="muted">No key reached the operating point.</p>')
    for k in flagged:
        parts.append(_key_section(k))
    parts.append("<h2>Clusters</h2>")
    if not result.clusters:
        parts.append('<p class="muted">No keys were found acting together.</p>')
    else:
        parts.append(
            "<table><tr><th>cluster</th><th>score</th><th>flagged</th><th>keys</th>"
            "<th>requests</th><th>linked by</th><th>reasons (as one stream)</th>"
            "<th>members</th></tr>"
        )
        for c in result.clusters:
            why = "<br>".join(e(r.words) for r in c.trace.reasons) or "-"
            parts.append(
                f"<tr><td>{e(c.id)}</td><td class='num'>{c.trace.score:.3f}</td>"
                f"<td>{_yes(c.flagged)}</td><td class='num'>{len(c.keys)}</td>"
                f"<td class='num'>{c.trace.requests}</td><td>{e(c.evidence)}</td>"
                f"<td>{why}</td>"
                f"<td>{', '.join(f'<code>{e(m)}</code>' for m in c.keys)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>All keys</h2>")
    parts.append(
        "<table><tr><th>key</th><th>score</th><th>flagged</th><th>cluster</th>"
        "<th>requests</th><th>first flag at</th><th>top reason</th></tr>"
    )
    for k in result.keys:
        parts.append(
            f"<tr><td><code>{e(k.key)}</code></td><td class='num'>{k.score:.3f}</td>"
            f"<td>{_yes(k.flagged)}</td><td>{e(k.cluster or '-')}</td>"
            f"<td class='num'>{k.requests}</td>"
            f"<td class='num'>{'-' if k.first_flag_at is None else k.first_flag_at}</td>"
            f"<td>{e(k.reasons[0].words) if k.reasons else '-'}</td></tr>"
        )
    parts.append("</table>")
    parts.append(_problems(result))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _key_section(k: KeyScore) -> str:
    """A flagged key: its reasons with values, then every feature value at its peak."""
    e = html.escape
    head = (
        f"<h3><code>{e(k.key)}</code> — score {k.score:.3f}"
        f"{' (cluster ' + e(k.cluster) + ')' if k.cluster else ''}</h3>"
    )
    first = (
        "was never flagged on its own"
        if k.first_flag_at is None
        else f"was first flagged after {_count(k.first_flag_at, 'request')}"
    )
    meta = f"<p>{_count(k.requests, 'request')}; {first}.</p>"
    rows = "".join(
        f"<tr><td><code>{e(r.feature)}</code></td><td class='num'>{r.value:.4g}</td>"
        f"<td>{e(r.words)}</td></tr>"
        for r in k.reasons
    )
    reasons = f"<table><tr><th>feature</th><th>value</th><th>reason</th></tr>{rows}</table>"
    values = "".join(
        f"<tr><td><code>{e(name)}</code></td><td class='num'>{value:.4g}</td></tr>"
        for name, value in sorted(k.own.values.items())
    )
    detail = (
        f"<details><summary>the key's own feature values at its peak "
        f"(score {k.own.score:.3f})</summary><table>{values}</table></details>"
    )
    shown = "".join(f"<li><code>{e(text)}</code></li>" for text in k.examples)
    prompts = f"<p>Its first prompts:</p><ul>{shown}</ul>" if shown else ""
    return head + meta + reasons + prompts + detail


def _problems(result: ScanResult) -> str:
    e = html.escape
    log = result.log
    rows = "".join(
        f"<tr><td><code>{e(f.path)}</code></td><td>{e(f.format)}</td>"
        f"<td class='num'>{f.read}</td><td class='num'>{f.bad}</td>"
        f"<td class='num'>{f.anonymous}</td></tr>"
        for f in log.files
    )
    out = [
        "<h2>Log problems</h2>",
        "<table><tr><th>file</th><th>format</th><th>requests</th><th>bad lines</th>"
        f"<th>without a key</th></tr>{rows}</table>",
    ]
    if log.problems:
        out.append("<ul>" + "".join(f"<li>{e(str(p))}</li>" for p in log.problems) + "</ul>")
    if log.unnamed:
        out.append(f"<p>… and {log.unnamed} more problems, counted but not named.</p>")
    if not log.problems and not log.unnamed:
        out.append('<p class="muted">None: every line was a readable request.</p>')
    return "\n".join(out)


def _number(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None  # JSON has no NaN


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _yes(flag: bool) -> str:
    return '<span class="flag">yes</span>' if flag else "no"
