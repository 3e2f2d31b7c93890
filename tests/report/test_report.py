"""retort report: every section from a real tiny run, the gap closed computed right, and bad
input refused in one line."""

from __future__ import annotations

import json
import re

import pytest

from retort.errors import ConfigError
from retort.report.page import gap_closed, render, word_diff
from retort.report.sources import gather


def test_a_report_has_every_section_with_its_figure(tiny_run):
    page = render(gather([tiny_run["run"]], [tiny_run["eval"]], [tiny_run["judge"]]))
    assert page.startswith("<!DOCTYPE html>")
    for title in (
        "Side by side",
        "Loss over training",
        "Held-out metrics over training",
        "Agreement and KL by position",
        "NLL per held-out completion",
        "Quality, size and speed",
        "Answers side by side",
        "Judge verdicts",
        "Configuration and data",
    ):
        assert f"<h2>{title}</h2>" in page, title
    assert page.count("<svg") == 5  # no section fell back to its "missing" note
    assert "class='note'>no " not in page
    # nothing fetched from anywhere: no scripts, no external links or images
    assert not re.search(r"<script|<link|src=['\"]?http|url\(http", page)
    # the judge's text is escaped, not injected
    assert "Say &lt;hi&gt; &amp; go" in page


def test_gap_closed_is_the_share_of_the_nll_gap_training_closed():
    models = [
        {"name": "teacher", "nll": 1.0},
        {"name": "student before", "nll": 3.0},
        {"name": "student after", "nll": 1.5},
        {"name": "other run", "nll": 3.5},
    ]
    assert gap_closed(models) == {"student after": 0.75, "other run": -0.25}
    # no starting point (or one already at the teacher): nothing to close, no column
    assert gap_closed(models[:1] + models[2:]) == {}
    assert gap_closed([models[0], {"name": "prune:2", "nll": 0.9}]) == {}


def test_the_table_shows_the_gap_closed(tiny_run, tmp_path):
    report = json.loads(tiny_run["eval"].read_text())
    for model, nll in zip(report["models"], (1.0, 3.0, 1.5), strict=True):
        model["nll"] = nll  # a tiny random teacher's own NLL is no lower than its prune's
    crafted = tmp_path / "eval.json"
    crafted.write_text(json.dumps(report))
    assert "<td>75 %</td>" in render(gather([], [crafted], []))


def test_a_report_of_the_run_alone_says_what_is_missing(tiny_run):
    page = render(gather([tiny_run["run"]], [], []))
    assert page.count("<svg") == 2  # loss and held-out curves
    assert "no eval.json given: run retort eval" in page


def test_word_diff_marks_what_changed_and_escapes():
    shown = word_diff("Paris is the capital", "Lyon is the <capital>")
    assert shown == (
        "<del>Paris</del> <mark>Lyon</mark> is the <del>capital</del> <mark>&lt;capital&gt;</mark>"
    )


def test_a_run_folder_without_metrics_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"run: no metrics.jsonl with steps in it"):
        gather([tmp_path / "run"], [], [])


def test_an_eval_of_another_teacher_is_refused(tiny_run, tmp_path):
    report = json.loads(tiny_run["eval"].read_text())
    report["teacher"] = {"name": "someone-else", "weights": '{"weights_sha256": "x"}'}
    other = tmp_path / "eval.json"
    other.write_text(json.dumps(report))
    with pytest.raises(ConfigError, match=r"scored against teacher someone-else, but .* was"):
        gather([tiny_run["run"]], [other], [])


def test_a_broken_eval_file_names_its_line(tmp_path):
    broken = tmp_path / "eval.json"
    broken.write_text('{\n  "models": [\n}')
    with pytest.raises(ConfigError, match=r"eval.json:3: not JSON"):
        gather([], [broken], [])


def test_the_cli_writes_the_file_whole(tiny_run, tmp_path, cli):
    out = tmp_path / "out" / "report.html"
    code, _ = cli("report", tiny_run["run"], "--eval", tiny_run["eval"], "--out", out)
    assert code == 0
    assert out.read_text().endswith("</html>\n")
    assert not list(out.parent.glob(".*partial"))
    code, err = cli("report", tmp_path / "missing")
    assert code == 2 and "not a folder" in err
