"""Capture from an HTTP teacher without a tokenizer (issue 13, part 1): `--endpoint chat` with no
`--tokenizer` writes a text store (messages, text, finish reason, usage, and the top-k as token
strings with their bytes), loads no tokenizer, and resumes, retries and budgets as a token
capture does. Against `retort serve` (real server, tiny model) and a fault injector."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from retort.capture.runner import generate
from retort.capture.store import Store
from retort.config import GenerateConfig
from retort.errors import ConfigError, StoreError
from retort.models.loading import load_tokenizer, resolve
from retort.teachers import http as http_teacher
from retort.teachers.http_text import estimated_tokens
from retort.teachers.tokens import TokenText
from tests.cli.test_errors import assert_one_line_error
from tests.conftest import write_jsonl
from tests.servers import FaultServer


def text_config(url, prompts, out, **overrides) -> GenerateConfig:
    values = {
        "teacher": url,
        "teacher_model": "tiny",
        "endpoint": "chat",
        "prompts": prompts,
        "out": out,
        "top_k": 3,
        "max_new_tokens": 8,
        **overrides,
    }
    return GenerateConfig(**values)


# (token string, its UTF-8 bytes): "é" comes as two byte-tokens, as OpenAI sends a character
# its tokenizer splits; their strings alone could not rebuild the text.
PIECES = [("Hi", b"Hi"), (" th", b" th"), ("ere", b"ere"), ("bytes:\\xc3", b"\xc3"),
          ("bytes:\\xa9", b"\xa9")]  # fmt: skip
TEXT = "Hi thereé"


def chat_reply(body: dict, *, finish: str = "stop", tops=None, usage: bool = True, **extra):
    """An OpenAI chat reply writing TEXT; with logprobs asked, each position's top-k: the
    written token first, then alternatives (one with no bytes, one of zero probability)."""
    choice = {"index": 0, "message": {"content": TEXT}, "finish_reason": finish, **extra}
    if body.get("logprobs"):
        content = []
        for position, (token, raw) in enumerate(PIECES):
            top = [
                {"token": "zz", "logprob": -9999.0, "bytes": list(b"zz")},  # vLLM's -inf
                {"token": token, "logprob": -0.25, "bytes": list(raw)},
                {"token": "<odd>", "logprob": -3.0, "bytes": None},
                {"token": "x", "logprob": -2.0, "bytes": [120]},
            ][: body["top_logprobs"] + 1]
            if tops is not None:
                top = tops(position, top)
            entry = {"token": token, "logprob": -0.25, "bytes": list(raw)}
            if top != "absent":
                entry["top_logprobs"] = top
            content.append(entry)
        choice["logprobs"] = {"content": content}
    payload = {"choices": [choice]}
    if usage:
        payload["usage"] = {"prompt_tokens": 11, "completion_tokens": len(PIECES)}
    return payload


def no_tokenizer_may_load(monkeypatch) -> None:
    """Loading any tokenizer fails the test (the capture must not need one)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a tokenizer was loaded for a capture that asked for none")

    from transformers import AutoTokenizer

    monkeypatch.setattr(http_teacher, "load_tokenizer", refuse)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", refuse)


def test_a_chat_capture_without_a_tokenizer_stores_the_servers_text_and_topk_strings(
    tiny_server, tiny_model_dir, prompts_file, tmp_path
):
    text = generate(text_config(tiny_server, prompts_file, tmp_path / "text"))
    tokens = generate(
        text_config(tiny_server, prompts_file, tmp_path / "tokens", tokenizer=str(tiny_model_dir))
    )
    assert text.written == 12 and not text.failures
    fingerprint = text.store.fingerprint
    assert fingerprint["teacher_kind"] == "text" and fingerprint["tokenizer"] is None
    assert "tokenizer_sha256" not in fingerprint and "teacher_kind" not in tokens.store.fingerprint
    # Greedy: the same answers as the token capture of the same server, position by position.
    vocabulary = TokenText(load_tokenizer(resolve(str(tiny_model_dir))))
    by_id = {row["id"]: row for row in tokens.store.rows()}
    for row in text.store.rows():
        twin = by_id[row["id"]]
        assert row["completion"] == twin["completion"]
        assert row["finish_reason"] == twin["finish_reason"]
        assert json.loads(row["messages"])[-1]["role"] == "user"
        positions = len(row["tokens"])
        assert positions == len(row["topk_tokens"]) == len(row["topk_bytes"]) > 0
        if row["finish_reason"] == "length":  # else the token store appended its end token
            assert positions == len(twin["completion_token_ids"])
            assert row["usage"]["completion_tokens"] == positions
        for i in range(positions):
            strings = [vocabulary(t)[0] for t in twin["topk_ids"][i]]
            raw = [bytes(vocabulary(t)[1]) for t in twin["topk_ids"][i]]
            assert row["topk_tokens"][i] == strings and row["topk_bytes"][i] == raw
            assert row["topk_logprobs"][i] == pytest.approx(twin["topk_logprobs"][i], abs=1e-5)


def test_a_text_capture_sends_messages_loads_no_tokenizer_and_keeps_the_usage(
    tmp_path, monkeypatch
):
    no_tokenizer_may_load(monkeypatch)
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "plain", "prompt": "Say hi.", "system": "Be brief."},
            {"id": "chat", "messages": [{"role": "user", "content": "Hello?"}]},
            {"id": "cut", "prompt": "Go on."},
        ],
    )
    bodies = []

    def respond(body: dict) -> tuple:
        bodies.append(body)
        last = body["messages"][-1]["content"]
        if last == "Go on.":
            return ("ok", chat_reply(body, finish="length", usage=False))
        return ("ok", chat_reply(body))

    with FaultServer(respond) as url:
        result = generate(text_config(url, prompts, tmp_path / "s", top_k=0))
    assert result.written == 3 and not result.failures
    for body in bodies:  # no logprobs asked, nothing token-shaped sent
        assert not {"prompt", "logprobs", "top_logprobs", "return_tokens_as_token_ids"} & set(body)
    sent = {b["messages"][-1]["content"]: b["messages"] for b in bodies[1:]}  # after the probe
    rows = {row["id"]: row for row in result.store.rows()}
    assert json.loads(rows["plain"]["messages"]) == sent["Say hi."]
    assert sent["Say hi."][0] == {"role": "system", "content": "Be brief."}
    assert rows["plain"]["completion"] == TEXT and rows["plain"]["finish_reason"] == "stop"
    assert rows["plain"]["usage"] == {"prompt_tokens": 11, "completion_tokens": 5}
    assert rows["plain"]["tokens"] is None and rows["plain"]["topk_tokens"] is None
    assert rows["cut"]["finish_reason"] == "length"
    assert rows["cut"]["usage"] == {"prompt_tokens": None, "completion_tokens": None}
    assert result.store.manifest["counts"]["completion_tokens"] == 10  # as the server said
    # Unreported usage is estimated for budgets: 4 characters a token, prompt and text.
    unpriced = estimated_tokens([{"role": "user", "content": "Go on."}]) + math.ceil(len(TEXT) / 4)
    assert result.teacher_tokens == 2 * (11 + 5) + unpriced


def test_text_topk_keeps_each_tokens_bytes_ranked_and_zero_probability_as_minus_inf(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Say hi."}])
    with FaultServer(lambda body: ("ok", chat_reply(body))) as url:
        result = generate(text_config(url, prompts, tmp_path / "s", top_k=3))
    (row,) = result.store.rows()
    assert row["tokens"] == [token for token, _ in PIECES]
    assert b"".join(row["token_bytes"]) == TEXT.encode()  # the bytes rebuild the text
    assert row["token_logprobs"] == [-0.25] * len(PIECES)
    for position, (token, raw) in enumerate(PIECES):
        assert row["topk_tokens"][position] == [token, "x", "<odd>"]  # most likely first
        assert row["topk_bytes"][position] == [raw, b"x", None]  # None: the server sent none
        assert row["topk_logprobs"][position] == [-0.25, -2.0, -3.0]
    with FaultServer(lambda body: ("ok", chat_reply(body))) as url:
        four = generate(text_config(url, prompts, tmp_path / "four", top_k=4))
    (row,) = four.store.rows()
    assert row["topk_tokens"][0][-1] == "zz" and math.isinf(row["topk_logprobs"][0][-1])


def test_a_stop_string_is_not_the_end_of_the_turn(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Say hi."}])
    with FaultServer(lambda body: ("ok", chat_reply(body, stop_reason="\n\n"))) as url:
        result = generate(text_config(url, prompts, tmp_path / "s", top_k=0))
    assert next(result.store.rows())["finish_reason"] == "stop_string"


# By prompt: what the server answers at each attempt before a good reply.
RETRIED = {
    "ok": [],
    "429 then ok": [("status", 429, {"retry-after": "0"}, {})],
    "500 then 503": [("status", 500, {}, {}), ("status", 503, {}, {})],
    "reset mid-body": [("reset",)],
    "logprobs missing": [("ok", "no-logprobs")],
}
REFUSED = {  # a reply without the top-k of every token: a failure, never retried
    "a position null": lambda position, top: None if position == 2 else top,
    "a position absent": lambda position, top: "absent" if position == 1 else top,
    "fewer than k": lambda position, top: top[:1] if position == 3 else top,
}


def test_faults_end_as_text_rows_or_recorded_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(http_teacher, "BACKOFF_BASE_S", 0.01)
    names = [*RETRIED, *REFUSED, "400"]
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": n, "prompt": n} for n in names])
    calls: dict[str, int] = {}

    def respond(body: dict) -> tuple:
        name = body["messages"][-1]["content"]
        attempt = calls[name] = calls.get(name, 0) + 1
        if name == "400":
            return ("status", 400, {}, {"error": {"message": "bad"}})
        if name in REFUSED:
            return ("ok", chat_reply(body, tops=REFUSED[name]))
        schedule = RETRIED.get(name, [])
        if attempt <= len(schedule):
            action = schedule[attempt - 1]
            return ("ok", chat_reply({})) if action == ("ok", "no-logprobs") else action
        return ("ok", chat_reply(body))

    with FaultServer(respond) as url:
        result = generate(
            text_config(url, prompts, tmp_path / "s", top_k=2, max_retries=3, concurrency=3)
        )
    rows = {row["id"] for row in result.store.rows()}
    failed = {f["id"]: f for f in result.failures}
    assert rows == set(RETRIED) and set(failed) == {*REFUSED, "400"}
    assert all(f["attempts"] == 1 for f in failed.values())
    assert "position 2: top_logprobs is null" in failed["a position null"]["reason"]
    assert result.retries == sum(len(s) for s in RETRIED.values())
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert {f["id"] for f in manifest["failures"]} == set(failed)


def test_a_token_budget_stops_a_text_capture_cleanly_and_the_next_run_finishes(tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"p{i}", "prompt": f"p {i}"} for i in range(10)]
    )
    with FaultServer(lambda body: ("ok", chat_reply(body))) as url:
        first = generate(
            text_config(url, prompts, tmp_path / "s", concurrency=1, max_teacher_tokens=40)
        )
        assert 0 < first.written < 10 and first.not_attempted == 10 - first.written
        assert first.teacher_tokens == 16 * first.written  # usage: 11 in + 5 out per reply
        second = generate(text_config(url, prompts, tmp_path / "s"))
    assert second.written == 10 - first.written and second.skipped == first.written
    assert len(Store.open(tmp_path / "s").done_ids()) == 10


def test_a_text_store_resumes_only_under_its_own_fingerprint(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "prompt": f"p {i}"} for i in "ab"])
    store = tmp_path / "s"
    with FaultServer(lambda body: ("ok", chat_reply(body))) as url:
        generate(text_config(url, prompts, store))
        partial = store / "shards" / ".part-killed.parquet.partial"
        partial.write_bytes(b"half a shard")  # what a kill mid-write leaves
        again = generate(text_config(url, prompts, store))
        assert again.written == 0 and again.skipped == 2 and not partial.exists()
        with pytest.raises(StoreError, match="teacher_kind text → None"):
            generate(text_config(url, prompts, store, tokenizer=str(tiny_model_dir)))
        with pytest.raises(StoreError, match="top_k 3 → 2"):
            generate(text_config(url, prompts, store, top_k=2))


def test_kill_9_during_a_text_capture_then_rerun_gives_every_prompt_exactly_once(tmp_path):
    records = [{"id": f"p{i:02d}", "prompt": f"prompt {i}"} for i in range(40)]
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    store = tmp_path / "store"

    def slow(body: dict) -> tuple:
        time.sleep(0.02)  # the server's loop sleeps: one reply per 20 ms
        return ("ok", chat_reply(body))

    with FaultServer(slow) as url:
        command = [
            sys.executable, "-m", "retort", "generate", "--teacher", url,
            "--teacher-model", "tiny", "--endpoint", "chat", "--prompts", str(prompts),
            "--out", str(store), "--top-k", "2", "--concurrency", "1", "--rows-per-shard", "2",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(list(store.glob("shards/*.parquet"))) < 2:
            assert time.monotonic() < deadline and process.poll() is None, "no shard written"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        done = len(Store.open(store).done_ids())
        assert 0 < done < len(records)
        subprocess.run(command, check=True, capture_output=True)
    opened = Store.open(store)
    ids = [i for shard in opened.shard_paths() for i in pq.read_table(shard)["id"].to_pylist()]
    assert sorted(ids) == [r["id"] for r in records]  # no loss, no duplicate
    assert opened.manifest["counts"] == {"rows": 40, "completion_tokens": 200, "shards": 20}


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--mode", "score"), "--mode score: scoring given text needs the teacher's tokenizer"),
        (("--codec", "q8"), "--codec q8: packs top-k token ids"),
    ],
)
def test_what_a_text_teacher_cannot_do_is_a_one_line_error_before_any_request(
    cli, tmp_path, flags, message
):
    from retort.serve.background import free_port

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi", "completion": "Hello"}])
    code, err = cli(
        "generate", "--teacher", f"http://127.0.0.1:{free_port()}/v1", "--teacher-model",
        "tiny", "--endpoint", "chat", "--prompts", prompts, "--out", tmp_path / "s", *flags,
    )  # fmt: skip
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "s").exists()


def test_a_text_teacher_needs_the_served_models_name(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi"}])
    with pytest.raises(ConfigError, match="name the served model with --teacher-model"):
        generate(text_config("http://127.0.0.1:9/v1", prompts, tmp_path / "s", teacher_model=None))


def test_inspect_reads_a_text_store(cli, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Say hi."}])
    with FaultServer(lambda body: ("ok", chat_reply(body))) as url:
        generate(text_config(url, prompts, tmp_path / "s"))
    code, _ = cli("inspect", tmp_path / "s", "--json")
    summary = json.loads(cli.stdout)
    assert code in (0, None) and summary["rows"] == 1 and summary["completion_tokens"] == 5
    assert summary["fingerprint"]["teacher_kind"] == "text"
    code, _ = cli("inspect", tmp_path / "s")
    assert "text only" in cli.stdout
