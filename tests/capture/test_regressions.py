"""Capture regressions found in review."""

from __future__ import annotations

import pytest

from retort.capture.prompts import load_prompts
from retort.capture.runner import generate
from retort.capture.store import Store
from retort.config import GenerateConfig
from retort.errors import InputError
from retort.teachers.local import LocalTeacher


def test_a_store_killed_while_being_created_can_be_created_again(tmp_path):
    (tmp_path / "s" / "shards").mkdir(parents=True)  # shards/ made, manifest never written
    store = Store.create_or_resume(tmp_path / "s", {"teacher": "t"})
    assert (tmp_path / "s" / "manifest.json").is_file() and store.done_ids() == set()


def test_a_chat_template_error_names_the_record_and_leaves_no_store(
    tiny_model_dir, prompts_file, tmp_path
):
    teacher = LocalTeacher.load(str(tiny_model_dir))
    teacher.tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    config = GenerateConfig(
        teacher=str(tiny_model_dir), prompts=prompts_file, out=tmp_path / "s", max_new_tokens=2
    )
    with pytest.raises(InputError, match=r"prompts\.jsonl:1: the chat template refused"):
        generate(config, teacher=teacher)
    assert not (tmp_path / "s").exists()


def test_a_prompts_file_that_is_not_utf8_is_an_input_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:1: not valid UTF-8"):
        load_prompts(path)


def test_a_corrupt_parquet_file_is_an_input_error(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"p\.parquet: cannot read this file"):
        load_prompts(path)
