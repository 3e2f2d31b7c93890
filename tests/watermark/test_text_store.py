"""`retort watermark detect` on a text store (issue 13): a store captured without a tokenizer
keeps no ids, so its completions are tokenized with the --tokenizer given; a watermarked
server's text, captured that way, still tests positive."""

from __future__ import annotations

import json

from retort.capture.runner import generate
from retort.config import GenerateConfig
from retort.serve.app import create_app
from retort.serve.background import serve_in_thread
from retort.teachers.chat import render_prompt
from retort.teachers.local import LocalTeacher
from retort.watermark.detect import detect_pooled
from retort.watermark.keys import save_key
from retort.watermark.texts import read_texts
from tests.watermark.conftest import make_key


def test_a_watermarked_servers_text_store_detects_in_the_given_tokenizer(
    cli, tiny_model_dir, prompts_file, tmp_path
):
    key = make_key("kgw", delta=4.0)
    teacher = LocalTeacher.load(str(tiny_model_dir)).watermarked(key)
    with serve_in_thread(create_app(teacher, "tiny", max_batch=8, wait_ms=20)) as url:
        config = GenerateConfig(
            teacher=url,
            teacher_model="tiny",
            endpoint="chat",
            prompts=prompts_file,
            out=tmp_path / "store",
            top_k=0,
            max_new_tokens=24,
            temperature=1.0,
        )
        store = generate(config).store
    assert store.is_text
    tokenizer = teacher.tokenizer
    texts = read_texts(tmp_path / "store", tokenizer)
    rows = {row["id"]: row for row in store.rows()}
    assert sorted(t.id for t in texts) == sorted(rows)
    for text in texts:  # the text re-encoded, its messages as context
        row = rows[text.id]
        assert text.token_ids == tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        assert text.context == render_prompt(tokenizer, json.loads(row["messages"]))
    assert detect_pooled([t.token_ids for t in texts], key).p_value < 1e-6

    key_file = save_key(key, tmp_path / "wm.key")
    code, _ = cli(
        "watermark", "detect", tmp_path / "store", "--key", key_file, "--tokenizer", tiny_model_dir
    )
    results = [json.loads(line) for line in cli.stdout.splitlines()]
    assert code == 0 and sorted(r["id"] for r in results) == sorted(rows)
    assert all(r["scored_tokens"] > 0 for r in results)
