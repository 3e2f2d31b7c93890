"""Bad input at the command line: exit 2, one line naming the file/line/key and the fix, and
no store or run folder left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from retort.cli.main import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["retort", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


def generate_args(teacher, prompts, out, *extra):
    return ("generate", "--teacher", teacher, "--prompts", prompts, "--out", out, *extra)


def test_missing_prompts_file(monkeypatch, capsys, tiny_model_dir, tmp_path):
    code, err = run_cli(
        monkeypatch,
        capsys,
        *generate_args(tiny_model_dir, tmp_path / "absent.jsonl", tmp_path / "store"),
    )
    assert_one_line_error(code, err, "absent.jsonl: prompts file not found")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('{"prompt": "ok"}\n{"prompt": \n', "bad.jsonl:2: not valid JSON"),
        (
            '{"prompt": "ok"}\n{"text": "hi"}\n',
            'bad.jsonl:2: record has neither "prompt" nor "messages"',
        ),
        (
            '{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n',
            "bad.jsonl:2: duplicate id 'a'",
        ),
        ('{"prompt": ""}\n', 'bad.jsonl:1: "prompt" is empty'),
    ],
)
def test_malformed_prompts(monkeypatch, capsys, tiny_model_dir, tmp_path, lines, expected):
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text(lines)
    code, err = run_cli(
        monkeypatch, capsys, *generate_args(tiny_model_dir, prompts, tmp_path / "store")
    )
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "store").exists()


def test_store_with_another_fingerprint_is_refused_and_kept(
    monkeypatch, capsys, tiny_model_dir, prompts_file, tmp_path
):
    store = tmp_path / "store"
    code, _ = run_cli(
        monkeypatch,
        capsys,
        *generate_args(tiny_model_dir, prompts_file, store, "--max-new-tokens", "4"),
    )
    assert code == 0
    before = sorted(p.name for p in (store / "shards").iterdir())
    code, err = run_cli(
        monkeypatch,
        capsys,
        *generate_args(
            tiny_model_dir, prompts_file, store, "--max-new-tokens", "4", "--temperature", "0.7"
        ),
    )
    assert_one_line_error(
        code, err, "store was made with different settings", "temperature 0.0 → 0.7"
    )
    assert sorted(p.name for p in (store / "shards").iterdir()) == before


def distill_args(tiny_model_dir, tiny_store, out, *extra):
    return ("distill", "--data", tiny_store, "--out", out, "--teacher", tiny_model_dir, *extra)


def test_unknown_config_key_names_the_nearest_one(
    monkeypatch, capsys, tiny_model_dir, tiny_store, tmp_path
):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("student: prune:2\nlearnig_rate: 0.001\n")
    code, err = run_cli(
        monkeypatch,
        capsys,
        *distill_args(tiny_model_dir, tiny_store, tmp_path / "run", "--config", recipe),
    )
    assert_one_line_error(
        code, err, "recipe.yaml: unknown key 'learnig_rate'", "did you mean 'learning_rate'?"
    )
    assert not (tmp_path / "run").exists()


def test_unknown_override_key(monkeypatch, capsys, tiny_model_dir, tiny_store, tmp_path):
    code, err = run_cli(
        monkeypatch,
        capsys,
        *distill_args(
            tiny_model_dir,
            tiny_store,
            tmp_path / "run",
            "--student",
            "prune:2",
            "--set",
            "max_step=3",
        ),
    )
    assert_one_line_error(code, err, "unknown key 'max_step'", "did you mean 'max_steps'?")


@pytest.mark.parametrize("keep", ["0", "4"])
def test_prune_out_of_range(monkeypatch, capsys, tiny_model_dir, tiny_store, tmp_path, keep):
    code, err = run_cli(
        monkeypatch,
        capsys,
        *distill_args(tiny_model_dir, tiny_store, tmp_path / "run", "--student", f"prune:{keep}"),
    )
    assert_one_line_error(
        code, err, f"prune:{keep}: keep between 1 and 3 of the teacher's 4 layers"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            "prune:2:fisher",
            "'fisher' is not a pruning part; use N, even, importance, mlp=M, heads=H",
        ),
        ("prune:heads=3", "heads=3 does not fit the teacher's 2 key/value groups of 2 heads"),
        ("prune:mlp=0", "'mlp=0' is not a pruning part"),
    ],
)
def test_bad_pruning_specs_fail_in_one_line_before_the_run_folder_exists(
    monkeypatch, capsys, tiny_model_dir, tiny_store, tmp_path, spec, fragment
):
    args = distill_args(tiny_model_dir, tiny_store, tmp_path / "run", "--student", spec)
    code, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, f"--student {spec}: {fragment}")
    assert not (tmp_path / "run").exists()


def test_importance_pruning_outside_distill_says_where_it_works(
    monkeypatch, capsys, tiny_model_dir, tiny_store, tmp_path
):
    code, err = run_cli(
        monkeypatch,
        capsys,
        "eval",
        "--teacher",
        str(tiny_model_dir),
        "--student",
        "prune:2:importance",
        "--data",
        str(tiny_store),
        "--out",
        str(tmp_path / "eval"),
    )
    assert_one_line_error(code, err, "calibration prompts from a store; use it with retort distill")


def test_student_with_another_tokenizer(
    monkeypatch, capsys, tiny_model_dir, tiny_store, other_tokenizer_model_dir, tmp_path
):
    code, err = run_cli(
        monkeypatch,
        capsys,
        *distill_args(
            tiny_model_dir,
            tiny_store,
            tmp_path / "run",
            "--student",
            other_tokenizer_model_dir,
            "--objective",
            "online_kl",
        ),
    )
    assert_one_line_error(code, err, "student tokenizer differs from the teacher's")
    assert not (tmp_path / "run").exists()


def test_every_verb_has_help():
    for verb in ("quickstart", "generate", "synth", "distill", "merge", "eval", "inspect", "serve"):
        result = subprocess.run(
            [sys.executable, "-m", "retort", verb, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0 and "Usage" in result.stdout, (verb, result.stderr)


def test_a_user_error_prints_no_traceback_from_the_real_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "retort", "inspect", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'nothing'}: not a store (no manifest.json); "
        "make one with retort generate"
    )


def test_malformed_set_values_are_one_line_errors(
    monkeypatch, capsys, tiny_model_dir, tiny_store, tmp_path
):
    code, err = run_cli(
        monkeypatch,
        capsys,
        *distill_args(
            tiny_model_dir,
            tiny_store,
            tmp_path / "run",
            "--student",
            "prune:2",
            "--set",
            "layer_map=[1,2",
        ),
    )
    assert_one_line_error(code, err, "--set 'layer_map=[1,2': the value is not valid YAML")
    code, err = run_cli(
        monkeypatch,
        capsys,
        *distill_args(
            tiny_model_dir,
            tiny_store,
            tmp_path / "run",
            "--student",
            "prune:2",
            "--beta",
            "0.3",
            "--set",
            "beta.x=1",
        ),
    )
    assert_one_line_error(code, err, "'beta' is a value, not a group of keys")


def test_an_unfinished_run_given_as_a_student_says_to_resume(
    monkeypatch, capsys, tiny_model_dir, tiny_store, tmp_path
):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("student: prune:2\n")
    code, err = run_cli(
        monkeypatch,
        capsys,
        "eval",
        "--teacher",
        tiny_model_dir,
        "--data",
        tiny_store,
        "--student",
        run,
    )
    assert_one_line_error(code, err, "a distill run with no final/ yet", "--resume")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--lora", "r=8,q_proj"), "'q_proj' is not KEY=VALUE"),
        (("--lora", "rank=8"), "lora.rank"),
        (("--objective", "topk", "--lmbda", "0.5"), "lmbda: only for objective on_policy"),
        (("--objective", "on_policy", "--lmbda", "2"), "lmbda"),
        (("--teacher-model", "tiny"), "teacher_model: only for an HTTP teacher"),
    ],
)
def test_malformed_training_flags_are_one_line_errors(
    monkeypatch, capsys, tiny_model_dir, tiny_store, tmp_path, extra, expected
):
    args = distill_args(tiny_model_dir, tiny_store, tmp_path / "run", "--student", "prune:2")
    code, err = run_cli(monkeypatch, capsys, *args, *extra)
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "run").exists()


def test_an_http_teacher_with_a_pruned_student_is_refused(
    monkeypatch, capsys, tiny_store, tmp_path
):
    args = ["distill", "--data", tiny_store, "--out", tmp_path / "run", "--student", "prune:2"]
    args += ["--teacher", "http://127.0.0.1:9/v1", "--objective", "on_policy"]
    code, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "prune:N needs a local teacher")


def test_merge_of_a_folder_that_is_not_a_run(monkeypatch, capsys, tmp_path):
    code, err = run_cli(monkeypatch, capsys, "merge", tmp_path)
    assert_one_line_error(code, err, "not a distill run folder (no config.yaml)")
    assert not (tmp_path / "merged").exists()
