"""The traffic simulator: deterministic bytes, disjoint corpus splits, records the detector
reads, labels that match the log, and each style's defining property."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from retort.cli.guard_simulate import simulate as simulate_command
from retort.errors import ConfigError
from retort.guard.detect import corpora
from retort.guard.detect.features import cheap_families
from retort.guard.detect.request import from_record
from retort.guard.detect.simulate import labels_path, limit, simulate, summary, write
from retort.guard.detect.styles import STYLES
from retort.guard.detect.styles.attack import TEMPLATES

TEMPLATE_STARTS = tuple(t.split("{", 1)[0] for t in TEMPLATES)

EXPORT_FIELDS = [
    "ts", "key", "client", "endpoint", "body", "usage", "status", "tier", "model",
    "latency_ms", "decision", "reason",
]  # fmt: skip


@pytest.fixture(scope="module")
def full():
    """The default run: every style at scale 1 (timed: it must stay well under 20 s)."""
    started = time.perf_counter()
    records, labels = simulate(seed=0)
    return records, labels, time.perf_counter() - started


@pytest.fixture(scope="module")
def by_style(full):
    records, labels, _ = full
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        out[labels["keys"][record["key"]]["style"]][record["key"]].append(record)
    return out


def _keys_of(style: str, scale: float = 3.0) -> list[list[dict]]:
    """Every key's records of one style alone, at ``scale`` (18 keys: enough that each of a
    style's variants shows up, whatever the per-key draws)."""
    records, _ = simulate(seed=0, scale=scale, styles={style: STYLES[style]})
    out: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        out[record["key"]].append(record)
    return [out[k] for k in sorted(out)]


def _user_text(record: dict) -> str:
    return from_record(record).text


def _elicit():
    """A fresh elicitation family, found through the registry (its class name is not ours)."""
    return next(f for f in cheap_families() if "elicit.cot_share" in {x.name for x in f.features})


def _cot_share(records: list[dict]) -> float:
    elicit = _elicit()
    for record in records:
        elicit.add(from_record(record))
    return elicit.values()["elicit.cot_share"]


def _gap_cv(records: list[dict]) -> float:
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(records)]
    return statistics.pstdev(gaps) / statistics.mean(gaps)


def _gaps(keys: dict[str, list[dict]]) -> list[float]:
    """Seconds between consecutive requests of each key."""
    return [b["ts"] - a["ts"] for rs in keys.values() for a, b in itertools.pairwise(rs)]


def _one_at_a_time(records: list[dict]) -> bool:
    """Each request sent only after the previous answer came back (a single client)."""
    return all(
        b["ts"] >= a["ts"] + a["latency_ms"] / 1000 - 0.01 for a, b in itertools.pairwise(records)
    )


def test_default_scale_size_and_speed(full):
    records, labels, seconds = full
    counts = Counter(v["label"] for v in labels["keys"].values())
    assert 320 <= counts["benign"] <= 360 and counts["attack"] == 66
    assert 350 <= len(labels["keys"]) <= 420
    assert 40_000 <= len(records) <= 75_000
    assert seconds < 20


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path):
    paths = [tmp_path / f"{name}.jsonl" for name in ("one", "two", "three")]
    for path, seed in zip(paths, (3, 3, 4), strict=True):
        write(path, seed=seed, scale=0.1, hours=24)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert labels_path(paths[0]).read_bytes() == labels_path(paths[1]).read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()
    assert not list(tmp_path.glob("*.tmp"))  # written through temporary files, none left


def test_gzip_output_is_deterministic(tmp_path: Path):
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write(a, scale=0.1, hours=6)
    write(b, scale=0.1, hours=6)
    assert a.read_bytes() == b.read_bytes() and labels_path(a).name == "a.labels.json"


def test_splits_share_no_source_text():
    a, b = corpora.load("a"), corpora.load("b")
    assert a.units and b.units and not a.units & b.units
    assert not {p.text for p in a.prompts} & {p.text for p in b.prompts}
    assert not {d.doc for d in a.docs} & {d.doc for d in b.docs}
    assert not set(a.passages) & set(b.passages) and not set(a.topics) & set(b.topics)
    # Every category is in both halves, so either can be tuned or reported on alone.
    assert {p.category for p in a.prompts} == {p.category for p in b.prompts}


def test_traffic_of_split_a_holds_no_split_b_text():
    b = corpora.load("b")
    records, _ = simulate(split="a", scale=0.1, hours=24)
    texts = "\n".join("\n".join([_user_text(r), *from_record(r).history]) for r in records)
    assert not [p.text for p in b.prompts if p.text in texts]
    # Docstrings mention other modules, so names may cross; their sentences may not.
    summaries = [d.summary for d in b.docs if len(d.summary.split()) >= 8]
    assert summaries and not [s for s in summaries if s in texts]
    assert not [f"{d.qualname} " for d in b.docs if f"use {d.qualname} " in texts]


def test_every_record_is_an_access_log_record_the_detector_reads(full):
    records, labels, _ = full
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    for record in records:
        assert list(record) == EXPORT_FIELDS
        request = from_record(record)
        assert re.fullmatch(r"[0-9a-f]{12}", request.key)
        assert request.text and not request.hashed
        if record["status"] == 200:
            assert record["usage"]["prompt_tokens"] > 0 and record["decision"] == "allowed"
        else:
            assert (record["status"], record["decision"]) == (429, "rate_limited")
    assert set(labels["keys"]) == {r["key"] for r in records}
    assert {v["style"] for v in labels["keys"].values()} == set(STYLES)
    assert labels["seed"] == 0 and labels["corpus"] == "builtin+stdlib:a"


def test_hashed_bodies_keep_only_digests():
    records, _ = simulate(scale=0.1, hours=6, bodies="hashes")
    assert all(from_record(r).hashed for r in records)


def test_batch_customer_sends_one_template_with_short_outputs(by_style):
    for key, records in by_style["batch_customer"].items():
        texts = [_user_text(r) for r in records]
        prefix = texts[0][:30]
        assert all(t.startswith(prefix) for t in texts), key
        assert {r["body"]["temperature"] for r in records} == {0}
        assert max(r["usage"]["completion_tokens"] for r in records) <= 60


def test_batch_customers_do_not_share_a_template(by_style):
    """Distinct customers on one cloud range must not look like one campaign's keys: each
    customer's template (its opening words) is its own."""
    openings = {}
    for key, records in by_style["batch_customer"].items():
        starts = {" ".join(_user_text(r).split()[:5]) for r in records}
        assert len(starts) == 1, key
        openings[key] = starts.pop()
    assert len(set(openings.values())) == len(openings) >= 20
    confident = [rs for rs in by_style["batch_customer"].values() if "logprobs" in rs[0]["body"]]
    assert confident  # some customers read a label's confidence from its logprobs


def test_hydra_keys_share_few_proxy_ranges_and_stay_small(by_style, full):
    _, labels, _ = full
    hydra = by_style["hydra"]
    assert len(hydra) == 30
    assert {labels["keys"][k]["cluster"] for k in hydra} == {"hydra-1"}
    ranges = {r["client"].rsplit(".", 1)[0] for rs in hydra.values() for r in rs}
    assert len(ranges) == 3
    for records in hydra.values():
        assert len(records) < 500
        assert len({r["client"].rsplit(".", 1)[0] for r in records}) >= 2
    others = {
        r["client"].rsplit(".", 1)[0]
        for style, keys in by_style.items()
        if style != "hydra"
        for rs in keys.values()
        for r in rs
    }
    assert not ranges & others
    # Synchronized: most requests of the cluster fall within a minute of another key's.
    times = sorted((r["ts"], k) for k, rs in hydra.items() for r in rs)
    near = sum(1 for (t, k), (u, j) in itertools.pairwise(times) if u - t < 60 and j != k)
    assert near > 0.5 * len(times)


def test_chat_users_hold_conversations_that_refer_back(by_style):
    multi = [
        from_record(r) for rs in by_style["chat_user"].values() for r in rs if r["status"] == 200
    ]
    with_history = [r for r in multi if r.history]
    assert len(with_history) > 0.5 * len(multi)
    quoted = sum(" ".join(r.history[-1].split()[:8]) in r.text for r in with_history)
    assert quoted > 0.02 * len(with_history)


def test_benign_corporate_nat_is_shared_by_several_keys(by_style):
    users: dict[str, set[str]] = defaultdict(set)
    for style in ("chat_user", "coder"):
        for key, records in by_style[style].items():
            for record in records:
                users[record["client"].rsplit(".", 1)[0]].add(key)
    assert max(len(keys) for keys in users.values()) >= 3


def test_template_sweep_sweeps_logprobs_temperature_and_seed(by_style):
    for records in by_style["template_sweep"].values():
        bodies = [r["body"] for r in records]
        assert all(b["logprobs"] and b["top_logprobs"] >= 5 for b in bodies)
        assert len({b["seed"] for b in bodies}) == len(bodies)
        assert max(Counter(_user_text(r) for r in records).values()) >= 1
    tops = {r["body"]["top_logprobs"] for rs in by_style["template_sweep"].values() for r in rs}
    assert 20 in tops or 10 in tops


def test_cot_harvest_asks_for_reasoning_and_gets_long_answers(by_style):
    means = []
    for records in by_style["cot_harvest"].values():
        assert _cot_share(records) > 0.5
        means.append(statistics.mean(r["usage"]["completion_tokens"] for r in records))
    assert min(means) > 250 and max(means) > 1000  # short traces (sums) and long ones


def test_cot_harvest_keys_vary_their_pacing():
    keys = _keys_of("cot_harvest")
    paced = [rs for rs in keys if _one_at_a_time(rs) and _gap_cv(rs) > 0.8]
    assert paced and len(paced) < len(keys)  # some pass for a person, the rest run workers
    hours = [len({int(r["ts"] // 3600) % 24 for r in rs}) for rs in paced]
    assert min(hours) <= 18  # one of them sleeps


def test_coverage_crawl_runs_like_clockwork_or_like_a_person():
    cvs, keys = [], _keys_of("coverage_crawl")
    for records in keys:
        cvs.append(_gap_cv(records))
        assert _one_at_a_time(records)
        assert all(from_record(r).user_turns == 1 and not from_record(r).history for r in records)
    clockwork = [cv for cv in cvs if cv < 0.1]
    assert clockwork and len(clockwork) < len(cvs) and max(cvs) > 0.5
    for records in keys:
        if _gap_cv(records) < 0.1:  # the clockwork ones never sleep
            assert len({int(r["ts"] // 3600) % 24 for r in records}) == 24


def test_template_sweep_keys_use_few_or_many_templates():
    counts = []
    for records in _keys_of("template_sweep"):
        starts = Counter(s for r in records for s in TEMPLATE_STARTS if _user_text(r).startswith(s))
        assert sum(starts.values()) == len(records)
        counts.append(len(starts))
    assert min(counts) <= 2 and max(counts) >= 5


def test_slow_and_low_is_a_few_an_hour_for_days(by_style):
    for records in by_style["slow_and_low"].values():
        span_h = (records[-1]["ts"] - records[0]["ts"]) / 3600
        assert span_h > 48 and len(records) / span_h < 5


def test_mixed_key_is_half_chat_half_extraction(by_style):
    for records in by_style["mixed"].values():
        chat = sum(bool(from_record(r).history) for r in records)
        templated = sum(_user_text(r).startswith(TEMPLATE_STARTS) for r in records)
        assert chat > 0.2 * len(records) and 0.3 < templated / len(records) < 0.7


def test_load_tester_hammers_few_prompts_into_the_rate_limit(by_style):
    refused = 0
    for records in by_style["load_tester"].values():
        assert len({_user_text(r) for r in records}) <= 3
        refused += sum(r["status"] == 429 for r in records)
    assert refused > 0


def test_benchmark_runs_once_at_temperature_zero(by_style):
    for records in by_style["benchmark_run"].values():
        assert {r["body"]["temperature"] for r in records} == {0}
        assert records[-1]["ts"] - records[0]["ts"] < 6 * 3600


def test_rag_app_sends_one_system_prompt_and_retrieved_context(by_style):
    systems = set()
    for records in by_style["rag_app"].values():
        (system,) = {from_record(r).system for r in records}
        systems.add(system)
        product = system.split("You are the help assistant of ", 1)[1].split(". Answer", 1)[0]
        assert all(product in _user_text(r) for r in records)  # its own layout, named
        assert len({_user_text(r).split()[0] for r in records}) == 1
    assert len(systems) == len(by_style["rag_app"])  # each app is its own product


def test_bursty_human_retries_the_same_request(by_style):
    retries = 0
    for records in by_style["bursty_human"].values():
        for a, b in itertools.pairwise(records):
            retries += a["body"] == b["body"] and b["ts"] - a["ts"] < 5
    assert retries > 10


def test_writer_asks_short_prompts_for_long_pieces(by_style):
    single, prompt, completion = 0, 0, 0
    records = [r for rs in by_style["writer"].values() for r in rs]
    for rs in by_style["writer"].values():
        if rs[-1]["ts"] - rs[0]["ts"] > 86400:  # a daily rhythm: the night's sleep shows
            assert max(b["ts"] - a["ts"] for a, b in itertools.pairwise(rs)) > 6 * 3600
    for record in records:
        single += not from_record(record).history
        prompt += record["usage"]["prompt_tokens"]
        completion += record["usage"]["completion_tokens"]
        assert 400 <= record["usage"]["completion_tokens"] <= 1500
    assert single > 0.6 * len(records) and completion / prompt > 3
    assert min(_gaps(by_style["writer"])) > 20  # a person reads the draft before replying


def test_tutor_student_asks_for_the_working_in_conversations(by_style):
    records = [r for rs in by_style["tutor_student"].values() for r in rs]
    assert 0.3 < _cot_share(records[:256]) < 0.9
    assert sum(bool(from_record(r).history) for r in records) > 0.4 * len(records)
    gaps = _gaps(by_style["tutor_student"])
    assert statistics.median(gaps) > 30 and sum(g < 5 for g in gaps) < 0.02 * len(gaps)


def test_eval_researcher_reruns_one_cot_benchmark_within_a_day(by_style):
    logprobs = 0
    for records in by_style["eval_researcher"].values():
        assert _cot_share(records) == 1.0
        assert {r["body"]["temperature"] for r in records} == {0}
        assert max(Counter(_user_text(r) for r in records).values()) >= 2  # the same set again
        assert records[-1]["ts"] - records[0]["ts"] < 24 * 3600
        logprobs += all(r["body"].get("logprobs") for r in records)
    assert logprobs >= 1


def test_agent_app_runs_tool_loops_at_machine_speed(by_style):
    json_apps = 0
    for records in by_style["agent_app"].values():
        assert len({from_record(r).system for r in records}) == 1
        assert all(r["body"]["tools"] for r in records)
        steps = 0
        for a, b in itertools.pairwise(records):
            if b["body"]["messages"][: len(a["body"]["messages"])] == a["body"]["messages"]:
                steps += 1  # the next step of the same task: sent as soon as the tool returned
                assert b["ts"] - (a["ts"] + a["latency_ms"] / 1000) <= 1.51
                tool = b["body"]["messages"][-1]
                assert tool["role"] == "tool" and json.loads(tool["content"])["ok"]
        assert steps > 0.4 * len(records)
        json_apps += any(r["body"].get("response_format") for r in records)
    assert 0 < json_apps < len(by_style["agent_app"])


def test_label_harvest_takes_short_labels_with_logprobs(by_style):
    for records in by_style["label_harvest"].values():
        done = [r for r in records if r["status"] == 200]
        completion = sum(r["usage"]["completion_tokens"] for r in done)
        prompt = sum(r["usage"]["prompt_tokens"] for r in done)
        assert completion / len(done) <= 4 and completion / prompt < 0.3
        assert {r["body"]["temperature"] for r in records} == {0}
        if records[0]["tier"] != "free":
            assert all(r["body"]["logprobs"] and r["body"]["top_logprobs"] >= 5 for r in records)
        assert len({_user_text(r) for r in records}) > 0.6 * len(records)  # topic after topic


def test_rate_limit_refuses_past_the_tier_rpm():
    records = [
        {"ts": float(t), "usage": {"prompt_tokens": 5, "completion_tokens": 5}, "status": 200,
         "latency_ms": 100.0, "decision": "allowed", "reason": None}
        for t in [*range(25), 61, 62]
    ]  # fmt: skip
    limit(records, "free")  # 20 a minute
    assert [r["status"] for r in records] == [200] * 20 + [429] * 5 + [200, 200]
    assert records[20]["usage"] == {"prompt_tokens": None, "completion_tokens": None}
    assert records[20]["reason"] == "requests_per_minute"


def test_style_table_can_be_varied():
    table = {**STYLES, "hydra": dataclasses.replace(STYLES["hydra"], keys=20, group=10)}
    _, labels = simulate(scale=1.0, hours=6, styles={"hydra": table["hydra"]})
    clusters = Counter(v["cluster"] for v in labels["keys"].values())
    assert clusters == {"hydra-1": 10, "hydra-2": 10}


def test_small_run_is_fast():
    started = time.perf_counter()
    records, labels = simulate(scale=0.1)
    assert time.perf_counter() - started < 3
    assert len(labels["keys"]) >= 30 and summary(records, labels)["hydra"].keys == 3


@pytest.mark.parametrize(
    ("kwargs", "flag"), [({"scale": 0}, "--scale"), ({"hours": -1}, "--hours"),
                         ({"split": "c"}, "split")],
)  # fmt: skip
def test_bad_arguments_name_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        simulate(**kwargs)


def test_cli_writes_traffic_labels_and_a_summary(tmp_path: Path, capsys):
    out = tmp_path / "traffic.jsonl"
    simulate_command(out, seed=1, split="b", scale=0.1, hours=12)
    labels = json.loads((tmp_path / "traffic.labels.json").read_text())
    lines = out.read_text().splitlines()
    assert labels["corpus"] == "builtin+stdlib:b" and labels["seed"] == 1
    assert {json.loads(line)["key"] for line in lines} == set(labels["keys"])
    printed = capsys.readouterr()
    assert "template_sweep" in printed.out and f"{len(lines)} requests" in printed.err


def test_optional_fortunes_join_only_when_asked(tmp_path: Path, monkeypatch):
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    sayings = [
        f"Saying number {i} is a short piece of wisdom worth reading twice." for i in range(4)
    ]
    (fortunes / "wisdom").write_text("\n%\n".join(sayings) + "\n")
    (fortunes / "wisdom.dat").write_bytes(b"\x00\x01binary index")
    monkeypatch.setattr(corpora, "FORTUNES", fortunes)
    corpora.load.cache_clear()
    corpora._raw.cache_clear()
    try:
        mine = corpora.split_of("fortunes:wisdom")
        with_extra = corpora.load(mine, ("fortunes",))
        assert with_extra.name == "builtin+stdlib+fortunes"
        assert set(sayings) <= set(with_extra.passages)
        assert not set(sayings) & set(corpora.load(mine).passages)
        other = corpora.load("b" if mine == "a" else "a", ("fortunes",))
        assert not set(sayings) & set(other.passages)
        with pytest.raises(ConfigError, match="extras"):
            corpora.load("a", ("poems",))
    finally:
        corpora.load.cache_clear()
        corpora._raw.cache_clear()
