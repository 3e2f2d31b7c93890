"""The real `retort` entry point, in a subprocess: usage errors, fast spec errors, run folders,
resume from the run folder alone, serve's port errors, progress in logs, defaults in --help."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from retort.train.loop import distill
from tests.train.test_loop import settings


def retort(*args, env: dict[str, str] | None = None, timeout: float = 300):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160", **(env or {})}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "retort", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
        timeout=timeout,
    )
    return result, time.perf_counter() - started


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--bogus-flag"], "Error: No such option: --bogus-flag"),
        (["generate", "--top-k", "abc"], "Error: Invalid value for '--top-k'"),
        (["generate", "--teacher"], "Error: Option '--teacher' requires an argument."),
        (["frobnicate"], "Error: No such command 'frobnicate'."),
        (["serve", "--model", "x", "--port", "99999"], "Error: Invalid value for '--port'"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(args, message):
    result, _ = retort(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) <= 4  # usage, hint, blank, the error


@pytest.mark.parametrize("args", [[], ["inspect"], ["distill"]])
def test_a_bare_command_prints_its_help_and_exits_2(args):
    result, _ = retort(*args)
    assert result.returncode == 2
    assert "Usage" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("smollm2-135m-instrcut", "no such model alias; did you mean smollm2-135m-instruct?"),
        ("runs-here/nosuch", "no such model folder"),
        ("Qwen/Qwen2.5-0.5B", "not in the Hugging Face cache (HF_HUB_OFFLINE is set)"),
    ],
)
def test_a_mistyped_alias_or_missing_folder_fails_at_once(tmp_path, spec, message):
    (tmp_path / "runs-here").mkdir()
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retort",
            "generate",
            "--teacher",
            spec,
            "--prompts",
            prompts,
            "--out",
            tmp_path / "store",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Retrying" not in result.stderr
    assert time.perf_counter() - started < 30  # the hub's ~50 s of retries are gone
    assert not (tmp_path / "store").exists()


def test_a_finished_run_folder_is_its_final_model(tiny_model_dir, prompts_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("student: prune:2\n")
    shutil.copytree(tiny_model_dir, run / "final")
    result, _ = retort(
        "generate",
        "--teacher",
        run,
        "--prompts",
        prompts_file,
        "--out",
        tmp_path / "store",
        "--max-new-tokens",
        "2",
        "--top-k",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "no final/ yet" not in result.stderr


def test_resume_with_the_run_folder_alone(tiny_model_dir, tiny_store, tmp_path):
    run = tmp_path / "run"
    distill(settings(tiny_model_dir, tiny_store, run, max_steps=2, save_every=1))
    result, _ = retort("distill", "--out", run, "--resume")
    assert result.returncode == 0, result.stderr
    assert "Field required" not in result.stderr
    # it had finished: said so, not "last loss nan"
    assert "already finished at step 2; nothing to train" in " ".join(result.stderr.split())
    changed, _ = retort("distill", "--out", run, "--resume", "--learning-rate", "0.5")
    assert changed.returncode == 2
    assert "--resume with different settings (learning_rate" in changed.stderr


def test_serve_on_a_taken_port_is_one_line_before_serving():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result, _ = retort("serve", "--model", "smollm2-135m-instruct", "--port", port)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --host 127.0.0.1 --port {port}: cannot listen there (in use by another "
        "process); pick another --port (or stop what holds it)"
    ]
    assert "serving" not in result.stderr


def test_progress_goes_to_a_log_as_plain_lines(tiny_model_dir, prompts_file, tmp_path):
    result, _ = retort(
        "generate",
        "--teacher",
        tiny_model_dir,
        "--prompts",
        prompts_file,
        "--out",
        tmp_path / "store",
        "--max-new-tokens",
        "2",
        "--batch-size",
        "4",
        env={"RETORT_PROGRESS_SECONDS": "0"},
    )
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("generate ")]
    assert lines and lines[-1].startswith("generate 12/12 prompts · ")
    assert "prompts/s" in lines[-1] and "elapsed" in lines[-1]
    assert any("eta" in line for line in lines[:-1])


def test_distill_help_shows_the_defaults():
    result, _ = retort("distill", "--help")
    text = " ".join(result.stdout.split())
    for default in ("[default: (0.0002)]", "[default: (100)]", "[default: (8)]"):
        assert default in text
    assert "--keep-checkpoints" in text


def test_the_quickstart_ends_with_what_to_do_next_and_a_caption_that_wraps_between_phrases(
    tmp_path,
):
    from retort.cli.quickstart import next_steps, time_caption

    caption = time_caption({"load teacher": 3.2, "generate": 201.0})
    assert caption.split(" · ")[0] == "wall time: load\u00a0teacher\u00a03s"
    assert caption.endswith("total\u00a0204s\u00a0(3.4\u00a0min)")
    text = "\n".join(next_steps(tmp_path))
    assert f"retort serve --model {tmp_path / 'student'}" in text
    assert "retort distill --data" in text
