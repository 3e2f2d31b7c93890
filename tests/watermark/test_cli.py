"""``retort watermark keygen|detect`` and ``retort generate --watermark`` end to end: the happy
paths, and one-line errors for bad keys, bad input and another tokenizer."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from retort.capture.store import Store
from retort.watermark.detect import detect_pooled
from retort.watermark.keys import load_key
from tests.cli.test_errors import assert_one_line_error
from tests.conftest import write_jsonl


@pytest.fixture
def key_file(cli, tmp_path, tiny_model_dir):
    path = tmp_path / "wm.key"
    args = ("--delta", "4", "--tokenizer", tiny_model_dir)
    assert cli("watermark", "keygen", "--out", path, *args)[0] == 0
    return path


def test_keygen_writes_a_private_key_and_refuses_to_overwrite_it(cli, tmp_path):
    path = tmp_path / "k.json"
    code, err = cli("watermark", "keygen", "--out", path, "--scheme", "gumbel", "--dual")
    assert code == 0 and load_key(path).key_id in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key(path)
    assert (key.scheme, key.dual, key.context_width) == ("gumbel", True, 4)
    before = path.read_text()
    code, err = cli("watermark", "keygen", "--out", path)
    assert_one_line_error(code, err, "exists; choose another --out, or --force")
    assert path.read_text() == before
    assert cli("watermark", "keygen", "--out", path, "--force")[0] == 0
    assert load_key(path).scheme == "kgw"


def test_keygen_settings_that_do_not_apply_are_one_line_errors(cli, tmp_path):
    code, err = cli(
        "watermark", "keygen", "--out", tmp_path / "k", "--scheme", "gumbel", "--delta", "3"
    )
    assert_one_line_error(code, err, "--delta: only for --scheme kgw")
    assert not (tmp_path / "k").exists()


def test_detect_jsonl_writes_one_object_per_text(cli, key_file, tiny_model_dir, tmp_path):
    texts = write_jsonl(
        tmp_path / "texts.jsonl",
        [{"id": "a", "text": "The capital of France is Paris."}, {"text": "Hello there"}],
    )
    out = tmp_path / "out.jsonl"
    code, _ = cli(
        "watermark", "detect", texts, "--key", key_file, "--tokenizer", tiny_model_dir, "--out", out
    )
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", "2"]  # no id: the line number
    for record in records:
        assert set(record) == {"id", "scored_tokens", "score", "p_value", "z_score"}
        assert 0 < record["p_value"] <= 1 and record["scored_tokens"] > 0
    # stdout, two keys (Bonferroni; the key is named) and a window
    second = tmp_path / "second.key"
    assert cli("watermark", "keygen", "--out", second)[0] == 0
    code, _ = run_detect(cli, texts, [key_file, second], tiny_model_dir, "--window", "3")
    lines = [json.loads(line) for line in cli.stdout.splitlines()]
    assert code == 0 and len(lines) == 2
    assert {"key", "window"} <= set(lines[0]) and lines[0]["key"] in (str(key_file), str(second))


def run_detect(cli, texts, keys, tokenizer, *extra):
    flags = [part for key in keys for part in ("--key", key)]
    return cli("watermark", "detect", texts, *flags, "--tokenizer", tokenizer, *extra)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"text": "ok"}\n{"text": \n', "texts.jsonl:2: not valid JSON"),
        ('{"text": "ok"}\n\n{"id": "b"}\n', 'texts.jsonl:3: record has no "text" string'),
        ('["text"]\n', "texts.jsonl:1: not a JSON object"),
    ],
)
def test_detect_bad_lines_name_file_and_line(
    cli, key_file, tiny_model_dir, tmp_path, content, expected
):
    texts = tmp_path / "texts.jsonl"
    texts.write_text(content)
    out = tmp_path / "out.jsonl"
    code, err = run_detect(cli, texts, [key_file], tiny_model_dir, "--out", out)
    assert_one_line_error(code, err, expected)
    assert not out.exists()


def test_detect_missing_texts_and_bad_key_files(cli, key_file, tiny_model_dir, tmp_path):
    code, err = run_detect(cli, tmp_path / "absent.jsonl", [key_file], tiny_model_dir)
    assert_one_line_error(code, err, "absent.jsonl: file not found")
    texts = write_jsonl(tmp_path / "t.jsonl", [{"text": "hi"}])
    not_a_key = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hi"}])
    code, err = run_detect(cli, texts, [not_a_key], tiny_model_dir)
    assert_one_line_error(code, err, "prompts.jsonl: not a watermark key file")
    code, err = run_detect(cli, texts, [tmp_path / "nokey"], tiny_model_dir)
    assert_one_line_error(code, err, "nokey: key file not found")


def test_detect_with_another_tokenizer_is_refused(
    cli, key_file, other_tokenizer_model_dir, tmp_path
):
    texts = write_jsonl(tmp_path / "t.jsonl", [{"text": "hi"}])
    code, err = run_detect(cli, texts, [key_file], other_tokenizer_model_dir)
    assert_one_line_error(code, err, "wm.key: key is for another tokenizer")


def generate(cli, teacher, prompts, store, key, *extra):
    return cli(
        "generate",
        "--teacher",
        teacher,
        "--prompts",
        prompts,
        "--out",
        store,
        "--max-new-tokens",
        "24",
        "--temperature",
        "1",
        "--top-k",
        "4",
        "--watermark",
        key,
        *extra,
    )


def test_generate_with_a_watermark_writes_a_store_that_detects(
    cli, key_file, tiny_model_dir, prompts_file, tmp_path
):
    store = tmp_path / "store"
    assert generate(cli, tiny_model_dir, prompts_file, store, key_file)[0] == 0
    key = load_key(key_file)
    fingerprint = Store.open(store).fingerprint
    assert fingerprint["watermark"]["key_id"] == key.key_id
    assert fingerprint["watermark"]["scheme"] == "kgw"
    assert key.secrets[0].hex() not in (store / "manifest.json").read_text()

    code, _ = run_detect(cli, store, [key_file], tiny_model_dir)
    results = [json.loads(line) for line in cli.stdout.splitlines()]
    assert code == 0 and len(results) == 12
    assert np.median([r["p_value"] for r in results]) < 1e-3
    rows = Store.open(store).read_table().to_pylist()
    pooled = detect_pooled([r["completion_token_ids"] for r in rows], key)
    assert pooled.p_value < 1e-12

    # the same key resumes (nothing left to do); another key, or none, is refused
    assert generate(cli, tiny_model_dir, prompts_file, store, key_file)[0] == 0
    other = tmp_path / "other.key"
    assert cli("watermark", "keygen", "--out", other)[0] == 0
    code, err = generate(cli, tiny_model_dir, prompts_file, store, other)
    assert_one_line_error(code, err, "store was made with different settings (watermark")


def test_store_of_another_tokenizer_is_refused_by_detect(
    cli, tmp_path, tiny_model_dir, other_tokenizer_model_dir, prompts_file
):
    key = tmp_path / "plain.key"
    assert cli("watermark", "keygen", "--out", key)[0] == 0
    store = tmp_path / "store"
    assert generate(cli, tiny_model_dir, prompts_file, store, key, "--max-new-tokens", "2")[0] == 0
    code, err = run_detect(cli, store, [key], other_tokenizer_model_dir)
    assert_one_line_error(code, err, "store was written with another tokenizer")


def test_generate_watermark_refusals(cli, key_file, tiny_model_dir, prompts_file, tmp_path):
    store = tmp_path / "store"
    code, err = generate(cli, "http://127.0.0.1:9/v1", prompts_file, store, key_file)
    assert_one_line_error(code, err, "retort serve --watermark KEYFILE")
    gumbel = tmp_path / "gumbel.key"
    assert cli("watermark", "keygen", "--out", gumbel, "--scheme", "gumbel")[0] == 0
    code, err = generate(cli, tiny_model_dir, prompts_file, store, gumbel, "--temperature", "0")
    assert_one_line_error(code, err, "--temperature 0:", "gumbel key")
    code, err = generate(cli, tiny_model_dir, prompts_file, store, tmp_path / "absent.key")
    assert_one_line_error(code, err, "absent.key: key file not found")
    code, err = generate(cli, tiny_model_dir, prompts_file, store, key_file, "--mode", "score")
    assert_one_line_error(code, err, "watermark: score mode")
    assert not store.exists()


def test_generate_with_a_key_for_another_tokenizer_is_refused(
    cli, key_file, other_tokenizer_model_dir, prompts_file, tmp_path
):
    code, err = generate(cli, other_tokenizer_model_dir, prompts_file, tmp_path / "s", key_file)
    assert_one_line_error(code, err, "key is for another tokenizer")
    assert not (tmp_path / "s").exists()


def test_serve_with_a_bad_key_fails_before_loading(cli, tiny_model_dir, tmp_path):
    code, err = cli("serve", "--model", tiny_model_dir, "--watermark", tmp_path / "none.key")
    assert_one_line_error(code, err, "none.key: key file not found")


def test_serve_watermark_on_request_without_a_key_is_one_line(cli, tiny_model_dir):
    code, err = cli("serve", "--model", tiny_model_dir, "--watermark-on-request")
    assert_one_line_error(code, err, "--watermark-on-request needs --watermark KEYFILE")
