"""``retort audit`` end to end: a reading-mode report, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from retort.watermark.keys import new_key, save_key
from tests.cli.test_errors import assert_one_line_error
from tests.conftest import write_jsonl
from tests.watermark.conftest import make_key


@pytest.fixture
def key_file(tmp_path):
    return save_key(make_key("kgw", seed=31), tmp_path / "wm.key")


@pytest.fixture
def texts(tmp_path, corpus):
    return write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in corpus[:40]])


def test_reading_mode_writes_a_report(cli, tiny_model_dir, key_file, texts, corpus, tmp_path):
    out = tmp_path / "report.json"
    public = write_jsonl(tmp_path / "public.jsonl", [{"text": t} for t in corpus[40:120]])
    code, err = cli(
        "audit", "--suspect", tiny_model_dir, "--key", key_file, "--texts", texts,
        "--out", out, "--null-keys", 5, "--null-seed", 1, "--frequent", 10,
        "--exclude-kgrams", public,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["mode"] == "reading" and report["texts"] == 40
    assert report["scored_tokens"] == report["keys"][0]["scored_tokens"] > 0
    assert set(report["excluded"]) == {"input", "listed", "frequent"}
    assert report["excluded"]["input"] > 0 and report["excluded"]["listed"] > 0
    assert report["null"]["trials"] == 5 and len(report["null"]["p_values"]) == 5
    assert "evidence, not proof" in report["statement"]
    assert "audit (reading)" in err and "p = " in err and f"{out}: report written" in err
    assert not list(tmp_path.glob(".report.json*"))  # written whole, renamed into place


def test_a_missing_key_file(cli, tiny_model_dir, texts, tmp_path):
    code, err = cli(
        "audit", "--suspect", tiny_model_dir, "--key", tmp_path / "absent.key", "--texts", texts
    )
    assert_one_line_error(code, err, "absent.key: key file not found", "keygen")


def test_api_mode_needs_the_key_tokenizer(cli, key_file, tmp_path, prompts_file):
    code, err = cli(
        "audit", "--suspect", "http://127.0.0.1:9/v1", "--suspect-model", "m",
        "--key", key_file, "--prompts", prompts_file,
    )  # fmt: skip
    assert_one_line_error(code, err, "--tokenizer: API mode needs the tokenizer")


def test_api_mode_needs_the_served_model_name(cli, key_file, prompts_file, tiny_model_dir):
    code, err = cli(
        "audit", "--suspect", "http://127.0.0.1:9/v1", "--key", key_file,
        "--prompts", prompts_file, "--tokenizer", tiny_model_dir,
    )  # fmt: skip
    assert_one_line_error(code, err, "--suspect-model")


def test_a_suspect_spec_that_does_not_resolve(cli, key_file, texts):
    code, err = cli("audit", "--suspect", "nosuch-model", "--key", key_file, "--texts", texts)
    assert_one_line_error(code, err, "--suspect nosuch-model: no such model folder or alias")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--mode", "api"), "--mode api: --suspect"),
        (("--mode", "guess"), "--mode guess: one of reading, api, sample"),
        (("--mode", "sample"), "--prompts: sample mode samples the suspect"),
        ((), "--texts: reading mode needs text"),
    ],
)
def test_flags_that_do_not_fit_the_mode(cli, tiny_model_dir, key_file, extra, expected):
    code, err = cli("audit", "--suspect", tiny_model_dir, "--key", key_file, *extra)
    assert_one_line_error(code, err, expected)


def test_a_key_for_another_tokenizer(
    cli, tiny_model_dir, other_tokenizer_model_dir, texts, tmp_path
):
    from retort.models.loading import load_tokenizer, resolve

    other = load_tokenizer(resolve(str(other_tokenizer_model_dir)))
    key = save_key(new_key("kgw", tokenizer=other), tmp_path / "other.key")
    code, err = cli("audit", "--suspect", tiny_model_dir, "--key", key, "--texts", texts)
    assert_one_line_error(code, err, "other.key: key is for another tokenizer")


def test_api_mode_writes_a_report(
    cli, tiny_server, tiny_model_dir, key_file, prompts_file, tmp_path
):
    out = tmp_path / "api.json"
    code, err = cli(
        "audit", "--suspect", tiny_server, "--suspect-model", "tiny", "--tokenizer",
        tiny_model_dir, "--key", key_file, "--prompts", prompts_file, "--max-new-tokens", 8,
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["mode"] == "api" and report["texts"] == 12 and report["scored_tokens"] > 50
    assert "audit (api)" in err


def test_api_mode_names_its_own_flag_for_an_unknown_model(
    cli, tiny_server, tiny_model_dir, key_file, prompts_file
):
    code, err = cli(
        "audit", "--suspect", tiny_server, "--suspect-model", "other", "--tokenizer",
        tiny_model_dir, "--key", key_file, "--prompts", prompts_file,
    )  # fmt: skip
    assert_one_line_error(code, err, "--suspect-model other: the server serves tiny")


def test_reading_mode_reads_a_store(cli, tiny_model_dir, tiny_store, key_file, tmp_path):
    out = tmp_path / "store.json"
    code, err = cli(
        "audit", "--suspect", tiny_model_dir, "--key", key_file, "--texts", tiny_store,
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["texts"] == 16 and report["positions"] > 16 * 12  # prompt and completion ids
