"""Prompt files: every bad record is named by file and line before any teacher work."""

from __future__ import annotations

import json

import pytest

from retort.capture.prompts import load_prompts
from retort.errors import InputError
from tests.conftest import write_jsonl


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jsonl: prompts file not found"):
        load_prompts(tmp_path / "nope.jsonl")


def test_malformed_json_line_names_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b"\n')
    with pytest.raises(InputError, match=r"p\.jsonl:2: not valid JSON"):
        load_prompts(path)


def test_record_without_prompt_or_messages(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"id": "x", "text": "b"}])
    with pytest.raises(InputError, match=r'p\.jsonl:2: record has neither "prompt" nor "messages"'):
        load_prompts(path)


def test_duplicate_ids_name_both_lines(tmp_path):
    records = [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    with pytest.raises(InputError, match=r"p\.jsonl:3: duplicate id 'a' \(first at .*p\.jsonl:1\)"):
        load_prompts(path)


def test_empty_prompt(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "   "}])
    with pytest.raises(InputError, match=r'p\.jsonl:1: "prompt" is empty'):
        load_prompts(path)


def test_messages_need_roles_and_a_user_turn(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "wizard", "content": "hi"}]}])
    with pytest.raises(InputError, match=r"messages\[0\] has role 'wizard'"):
        load_prompts(path)


def test_ids_without_an_id_field_are_stable_hashes_of_prompt_and_sampling(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hello"}, {"id": "mine", "prompt": "hi"}])
    first = load_prompts(path, {"temperature": 0.0})
    again = load_prompts(path, {"temperature": 0.0})
    other = load_prompts(path, {"temperature": 0.7})
    assert first[0].id == again[0].id != other[0].id
    assert first[1].id == "mine"


def test_parquet_and_csv_read_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "a", "prompt": "one", "reference": "1"}, {"id": "b", "prompt": "two"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    (tmp_path / "p.csv").write_text("id,prompt,reference\na,one,1\nb,two,\n")
    for name in ("p.parquet", "p.csv"):
        records = load_prompts(tmp_path / name)
        assert [(r.id, r.prompt, r.reference) for r in records] == [
            ("a", "one", "1"),
            ("b", "two", None),
        ]


def test_a_datasets_folder_reads_like_a_file(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"id": "a", "prompt": "one", "reference": "1"}, {"id": "b", "prompt": "two"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    records = load_prompts(tmp_path / "ds")
    assert [(r.id, r.prompt, r.reference) for r in records] == [
        ("a", "one", "1"),
        ("b", "two", None),
    ]


def test_a_folder_of_parquet_files_reads_every_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist([{"prompt": "one"}]), tmp_path / "data" / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{"prompt": "two"}]), tmp_path / "data" / "b.parquet")
    assert [r.prompt for r in load_prompts(tmp_path / "data")] == ["one", "two"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"a folder without state\.json or \.parquet files"):
        load_prompts(tmp_path / "empty")


def test_repeated_prompts_are_named_or_dropped_with_dedup(tmp_path):
    records = [
        {"prompt": "Hello  there"},
        {"prompt": "other"},
        {"prompt": "Hello there"},
        {"prompt": "other"},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    with pytest.raises(InputError, match=r"p\.jsonl:4: the same prompt as .*p\.jsonl:2.*--dedup"):
        load_prompts(path)
    kept = load_prompts(path, dedup=True)
    assert [r.where.rsplit(":", 1)[1] for r in kept] == ["1", "2"]  # whitespace-insensitive


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_line_that_is_not_utf8_is_named_by_its_line(suffix, tmp_path):
    # A Latin-1 "é" on line 17, far past the first read buffer of a text-mode file.
    path = tmp_path / f"prompts{suffix}"
    if suffix == ".jsonl":
        lines = [json.dumps({"prompt": f"question {i} " + "x" * 600}) for i in range(1, 17)]
        lines.append('{"prompt": "caf\xe9"}')
    else:
        lines = ["prompt"] + [f"question {i} " + "x" * 600 for i in range(2, 17)] + ["caf\xe9"]
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    with pytest.raises(InputError) as caught:
        load_prompts(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:17: not valid UTF-8")
    assert "column 16" in message if suffix == ".jsonl" else "column 4" in message
    assert "save it as UTF-8" in message
