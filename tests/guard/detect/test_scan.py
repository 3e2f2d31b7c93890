"""The scan end to end on hand-made logs: checkpoints and peaks, determinism of the scores file,
a malformed log, the baseline, the HTML report, and the CLI command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from retort.cli.guard_scan import scan as scan_command
from retort.errors import ConfigError
from retort.guard.detect.model import Scorer, Weight
from retort.guard.detect.report import render_html, score_records, summary_table, write_html
from retort.guard.detect.scan import scan

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


def record(ts: float, key: str, prompt: str, client: str = "192.0.2.1", **body) -> dict:
    return {
        "ts": round(ts, 3),
        "key": key,
        "client": client,
        "endpoint": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": prompt}], **body},
        "usage": {"prompt_tokens": 12, "completion_tokens": 300},
        "status": 200,
    }


def prompt(i: int) -> str:
    return " ".join(WORDS[(i * k + 3) % len(WORDS)] for k in (1, 3, 5, 7, 11)) + f" {i}?"


def write_log(path: Path, records: list[dict], extra: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra)
    return path


def mixed_log() -> list[dict]:
    """A machine-speed sweeper with log-probabilities and CoT, and three slow humans."""
    out = [
        record(
            T0 + 20 * i,
            "sweeper",
            f"Explain step by step, showing your reasoning: {prompt(i)}",
            client="203.0.113.9",
            logprobs=True,
            top_logprobs=5,
        )
        for i in range(120)
    ]
    for h in range(3):
        out += [
            record(T0 + 3600 * h + 1500 * i + 37 * (i % 5), f"human-{h}", prompt(100 * h + i))
            for i in range(30)
        ]
    return sorted(out, key=lambda r: (r["ts"], r["key"]))


def rate_only() -> Scorer:
    """Known answers: the score is the logistic of (requests per hour − 10) / 10."""
    weights = {"volume.requests_per_hour": Weight(mean=10.0, scale=10.0, weight=1.0)}
    return Scorer(weights, bias=0.0, flag_at=0.5, source="test: rate only")


def hash_embedder():
    from retort.guard.detect.embed import load_embedder

    return load_embedder("hash")


def test_peak_over_checkpoints_and_first_flag(tmp_path):
    # 50 requests an hour apart, 50 a minute apart, 50 an hour apart again; a 30-request
    # window sees the fast stretch alone only at the checkpoint of request 100
    times, t = [], T0
    for gap in [3600.0] * 50 + [60.0] * 50 + [3600.0] * 50:
        t += gap
        times.append(t)
    log = write_log(
        tmp_path / "a.jsonl", [record(ts, "k", prompt(i)) for i, ts in enumerate(times)]
    )
    (k,) = scan([log], scorer=rate_only(), window=30, checkpoint_every=25).keys
    assert [n for n, _, _ in k.history] == [25, 50, 75, 100, 125, 150]
    scores = [s for _, _, s in k.history]
    assert scores[3] == pytest.approx(1 / (1 + pow(2.718281828459045, -5.0)), rel=1e-6)  # 60/h
    assert k.score == max(scores) == scores[3]
    assert scores[-1] < 0.5  # the window rolled past the fast stretch; the peak stays
    assert k.first_flag_at == 100 and k.flagged
    assert k.reasons[0].feature == "volume.requests_per_hour"
    assert k.reasons[0].value == pytest.approx(60.0)
    assert k.requests == 150


def test_same_log_gives_byte_identical_scores(tmp_path):
    log = write_log(tmp_path / "traffic.jsonl", mixed_log())
    app = _app()
    runs = []
    for n in range(2):
        out = tmp_path / f"scores{n}.jsonl"
        result = CliRunner().invoke(app, [str(log), "--out", str(out), "--embedder", "hash"])
        assert result.exit_code == 0, result.output
        runs.append(out.read_bytes())
    assert runs[0] == runs[1]
    rows = [json.loads(line) for line in runs[0].decode().splitlines()]
    # highest score first (what the packaged weights make of this hand-made log is not the
    # point here: test_simulate measures them on held-out simulated traffic)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert {r["key"] for r in rows} == {"sweeper", "human-0", "human-1", "human-2"}
    assert set(rows[0]) == {
        "key",
        "score",
        "flagged",
        "reasons",
        "cluster",
        "requests",
        "first_flag_at",
    }
    assert all(set(reason) == {"feature", "value", "words"} for reason in rows[0]["reasons"])
    order = [(-r["score"], r["key"]) for r in rows]
    assert order == sorted(order)


def test_scores_do_not_depend_on_the_process_hash_seed(tmp_path):
    # set and dict-of-str iteration order changes with PYTHONHASHSEED; the scores must not
    log = write_log(tmp_path / "traffic.jsonl", mixed_log() + _hydra_pair())
    code = (
        "import sys; from pathlib import Path; from retort.cli.guard_scan import scan; "
        "scan([Path(sys.argv[1])], Path(sys.argv[2]), embedder='hash')"
    )
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"scores-{seed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(log), str(out)], env=env, check=True)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert b'"cluster": "c1"' in outputs[0]  # the clustering ran too


def _hydra_pair() -> list[dict]:
    """Two keys from one /24 with one template at the same moments: a cluster of two."""
    return [
        record(
            T0 + 3600 * (i // 2) + 30 * (i % 2) + k,
            f"pair-{k}",
            f"Translate into French, word for word, the sentence number {i} of the manual.",
            client=f"198.51.100.{k + 1}",
        )
        for k in range(2)
        for i in range(24)
    ]


def test_a_malformed_log_still_scans_and_names_its_bad_lines(tmp_path):
    good = mixed_log()[:60]
    lines = [json.dumps(r) for r in good]
    lines.insert(5, "{this is not json")
    lines.insert(9, json.dumps({"key": "x"}))  # no ts
    lines.insert(12, json.dumps(["a", "list"]))
    log = tmp_path / "broken.jsonl"
    log.write_text("\n".join(lines) + '\n{"ts": 1, "key": "cut')  # a partial last write
    result = scan([log], scorer=rate_only())
    assert result.log.bad == 4
    assert result.log.read == 60
    assert sum(k.requests for k in result.keys) == 60
    named = [str(p) for p in result.log.problems]
    assert any(":6: not JSON" in p for p in named)
    assert any(":10: no 'ts'" in p for p in named)
    assert any("cut short" in p for p in named)
    cli = CliRunner().invoke(
        _app(), [str(log), "--out", str(tmp_path / "s.jsonl"), "--embedder", "none"]
    )
    assert cli.exit_code == 0, cli.output
    assert "4 bad log lines skipped" in cli.output
    assert "broken.jsonl:6: not JSON" in cli.output


def test_baseline_is_the_window_tests_reference(tmp_path):
    # the sweeper's prompts are worded unlike the benign baseline's: against the baseline its
    # window sits beyond every calibration window (p at its floor 1/201); against the scanned
    # traffic, which is mostly the sweeper itself, it hides
    log = write_log(tmp_path / "traffic.jsonl", mixed_log())
    benign = [record(T0 - 86400 + 300 * i, f"old-{i % 4}", prompt(500 + i)) for i in range(256)]
    base = write_log(tmp_path / "benign.jsonl", benign)
    window_only = Scorer({"window.mmd_log10p": Weight(0.5, 0.5, 1.0)}, 0.0, 0.5, "test")
    with_base = scan([log], [base], embedder=hash_embedder(), scorer=window_only)
    alone = scan([log], embedder=hash_embedder(), scorer=window_only)
    assert with_base.reference == "baseline" and alone.reference == "self"
    assert any("baseline of 256 benign requests" in n for n in with_base.notes)
    assert any("no baseline" in n for n in alone.notes)
    against_base = {k.key: k.own.values["window.mmd_log10p"] for k in with_base.keys}
    against_self = {k.key: k.own.values["window.mmd_log10p"] for k in alone.keys}
    assert against_base["sweeper"] == pytest.approx(math.log10(201))
    assert against_self["sweeper"] < 1.0
    assert against_base["human-0"] == 0.0  # 30 prompts: under the test's smallest window
    no_embedder = scan([log], scorer=rate_only())
    assert no_embedder.reference == "none"
    assert "window.mmd_log10p" not in no_embedder.keys[0].own.values


def test_html_report_is_self_contained_and_escapes_the_log(tmp_path):
    records = mixed_log()
    evil = "<script>alert('x')</script>"
    records += [record(T0 + 60 * i, "<b>evil</b>", f"{evil} {i}") for i in range(40)]
    log = write_log(tmp_path / "traffic.jsonl", records, extra="oops<script>\n")
    result = scan([log], embedder=hash_embedder(), scorer=rate_only())
    assert any(k.key == "<b>evil</b>" and k.flagged for k in result.keys)
    page = write_html(result, tmp_path / "report.html").read_text()
    assert page == render_html(result)
    assert "<script" not in page and "<b>evil" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;evil&lt;/b&gt;" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert "<style>" in page and "Log problems" in page and "Flagged keys" in page
    assert "traffic.jsonl:" in page  # the bad line is named


def test_summary_table_and_records(tmp_path):
    log = write_log(tmp_path / "traffic.jsonl", mixed_log())
    result = scan([log], scorer=rate_only())
    table = summary_table(result, top=2)
    assert [c.header for c in table.columns] == [
        "key",
        "score",
        "flagged",
        "cluster",
        "requests",
        "top reason",
    ]
    assert table.row_count == 2
    assert "4 keys scanned (210 requests), 1 flagged" in str(table.caption)
    rows = score_records(result)
    assert rows[0]["key"] == "sweeper" and rows[0]["flagged"]
    assert not any(r["flagged"] for r in rows[1:])


def test_cli_threshold_and_weights_flags(tmp_path):
    log = write_log(tmp_path / "traffic.jsonl", mixed_log())
    weights = tmp_path / "w.json"
    weights.write_text(
        json.dumps(
            {
                "features": {
                    "volume.requests_per_hour": {"mean": 10.0, "scale": 10.0, "weight": 1.0}
                },
                "bias": 0.0,
                "flag_at": 0.5,
            }
        )
    )
    out = tmp_path / "s.jsonl"
    args = [str(log), "--out", str(out), "--embedder", "none", "--weights", str(weights)]
    html = tmp_path / "r.html"
    ok = CliRunner().invoke(_app(), [*args, "--threshold", "0.01", "--html", str(html)])
    assert ok.exit_code == 0, ok.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["flagged"] for r in rows)  # every key is above 0.01
    assert html.exists() and f"written to {out}" in ok.output
    with pytest.raises(ConfigError, match="--threshold"):
        scan_command([log], out, threshold=1.5)


def _app() -> typer.Typer:
    """A Typer app with the command alone (as its only command, typer runs it directly)."""
    app = typer.Typer()
    app.command()(scan_command)
    return app


def test_save_baseline_writes_the_reference_the_gateway_loads(tmp_path):
    from retort.guard.detect.features.window import Reference

    log = write_log(tmp_path / "traffic.jsonl", mixed_log())
    benign = [record(T0 - 86400 + 300 * i, f"old-{i % 4}", prompt(500 + i)) for i in range(256)]
    base = write_log(tmp_path / "benign.jsonl", benign)
    saved = tmp_path / "benign.npz"
    args = [str(log), "--out", str(tmp_path / "s.jsonl"), "--embedder", "hash"]
    ok = CliRunner().invoke(_app(), [*args, "--baseline", str(base), "--save-baseline", str(saved)])
    assert ok.exit_code == 0, ok.output
    reference = Reference.load(saved)
    assert reference.embedder == "hash-ngram" and reference.pool.shape[0] > 0
    assert not saved.with_name(saved.name + ".tmp").exists()
    with pytest.raises(ConfigError, match="--save-baseline: the window test needs an embedder"):
        scan_command([log], tmp_path / "s.jsonl", embedder="none", save_baseline=saved)


def test_packaged_weights_separate_held_out_simulated_traffic(tmp_path):
    # a seed and corpus split the weights were not fitted on (bench/detect.py: seed 1, split
    # a), at a small scale: the packaged hash weights still rank attackers above benign keys
    import numpy as np

    from retort.guard.detect.metrics import roc_auc
    from retort.guard.detect.simulate import labels_path, write

    log = tmp_path / "held_out.jsonl"
    write(log, seed=7, split="b", scale=0.15)
    labels = json.loads(labels_path(log).read_text())["keys"]
    result = scan([log], embedder=hash_embedder())
    scores = np.array([k.score for k in result.keys])
    attack = np.array([labels[k.key]["label"] == "attack" for k in result.keys])
    assert result.flag_at == 0.5 and attack.sum() >= 8 and (~attack).sum() >= 40
    assert roc_auc(scores, attack) >= 0.95
    assert (scores[~attack] >= 0.5).sum() <= 2  # benign keys flagged
    assert (scores[attack] >= 0.5).mean() >= 0.7
