"""`kill -9` at random moments of a capture, then a rerun: every prompt exactly once."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

from retort.capture.prompts import load_prompts
from retort.capture.runner import select_shard
from retort.capture.store import Store
from tests.conftest import PROMPTS, write_jsonl


def test_kill_9_at_random_moments_then_rerun_gives_every_prompt_exactly_once(
    tiny_model_dir, tmp_path
):
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:80]]
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    store = tmp_path / "store"
    command = [
        sys.executable,
        "-m",
        "retort",
        "generate",
        "--teacher",
        str(tiny_model_dir),
        "--prompts",
        str(prompts),
        "--out",
        str(store),
        "--max-new-tokens",
        "24",
        "--temperature",
        "1.0",
        "--batch-size",
        "2",
        "--rows-per-shard",
        "2",
    ]
    chance = random.Random(0)
    progress = []
    for _ in range(4):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shards_before = len(list(store.glob("shards/*.parquet")))
        deadline = time.monotonic() + 60
        while len(list(store.glob("shards/*.parquet"))) <= shards_before:
            assert time.monotonic() < deadline, "no shard written"
            time.sleep(0.01)
        time.sleep(chance.uniform(0.0, 0.5))  # shards of 2 rows land every ~0.1 s
        process.send_signal(signal.SIGKILL)
        process.wait()
        progress.append(len(Store.open(store).done_ids()))
    assert progress == sorted(set(progress)) and progress[-1] < len(records), progress
    subprocess.run(command, check=True, capture_output=True)
    opened = Store.open(store)
    ids = [i for shard in opened.shard_paths() for i in pq.read_table(shard)["id"].to_pylist()]
    assert sorted(ids) == sorted(r["id"] for r in records)  # no loss, no duplicate
    assert opened.manifest["counts"]["rows"] == len(records)


def test_shards_split_prompts_without_overlap(prompts_file):
    records = load_prompts(prompts_file)
    parts = [select_shard(records, f"{i}/3") for i in range(3)]
    assert sorted(r.id for part in parts for r in part) == sorted(r.id for r in records)
