"""`retort judge` against a scripted judge server on 127.0.0.1: both orders are asked, the
two-order rule holds, unparsable verdicts are re-asked, recorded with their raw text and
counted apart (never as ties), grading uses the reference, and bad input is one line."""

from __future__ import annotations

import json

from tests.cli.test_errors import assert_one_line_error
from tests.conftest import write_jsonl
from tests.judge.conftest import answers_file, read_jsonl, scripted, shown_answers
from tests.servers import FaultServer

PROMPTS = [
    {"id": "p1", "prompt": "Name the capital of Finland.", "reference": "Helsinki"},
    {"id": "p2", "prompt": "Say something kind."},
    {"id": "p3", "prompt": "Describe rain."},
]


def judge_args(url, tmp_path, answers_a, answers_b, *extra):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    a = answers_file(tmp_path / "a.jsonl", answers_a)
    b = answers_file(tmp_path / "b.jsonl", answers_b)
    return (
        *("judge", "--judge", url, "--judge-model", "tiny", "--prompts", prompts),
        *("--answers-a", a, "--answers-b", b, "--out", tmp_path / "out", *extra),
    )


def prefers_good(messages):
    """An unbiased judge: picks the answer with GOOD in it; grades by the reference."""
    prompt = messages[0]["content"]
    if "Reference Answer" in prompt:
        answer = prompt.split("[The Start of Assistant's Answer]\n")[1]
        return "[[CORRECT]]" if "Helsinki" in answer else "Wrong. [[INCORRECT]]"
    first, second = shown_answers(prompt)
    if "GOOD" in first and "GOOD" not in second:
        return "The first one. [[A]]"
    if "GOOD" in second and "GOOD" not in first:
        return "The second one. [[B]]"
    return "Equal. [[C]]"


def test_an_unbiased_judge_picks_the_same_answer_in_both_orders(cli, tmp_path):
    asked = []
    good = {"p1": "GOOD: Helsinki", "p2": "GOOD: you matter", "p3": "same"}
    bad = {"p1": "Oslo", "p2": "whatever", "p3": "same"}
    with FaultServer(scripted(prefers_good, asked)) as url:
        code, err = cli(*judge_args(url, tmp_path, good, bad))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "judge.json").read_text())
    pairwise = report["pairwise"]
    assert (pairwise["a_wins"], pairwise["b_wins"], pairwise["ties"]) == (2, 0, 1)
    assert pairwise["unparsable"] == 0 and pairwise["position_consistency"] == 1.0
    assert pairwise["win_rate_a"] == (2 + 0.5) / 3
    assert report["graded"]["a"]["correct"] == 1 and report["graded"]["b"]["correct"] == 0
    assert report["graded"]["a"]["graded"] == 1
    # Each prompt was judged in both orders: B's answer appears first in exactly one of them.
    firsts = [
        shown_answers(m[0]["content"])[0] for m in asked if "Reference" not in m[0]["content"]
    ]
    assert sorted(firsts) == sorted([*good.values(), *bad.values()])
    assert len(asked) == 2 * 3 + 2  # two orders per prompt, two grades for p1
    row = next(line for line in cli.stdout.splitlines() if "[0.31, 0.98]" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["2", "0", "1", "0", "0.83", "[0.31, 0.98]", "1.00"]


def always_first(messages):
    """A judge with nothing but position bias: the first answer shown always wins."""
    return "[[CORRECT]]" if "Reference Answer" in messages[0]["content"] else "[[A]]"


def test_a_judge_that_always_says_first_is_all_ties_and_inconsistent(cli, tmp_path):
    good = {"p1": "GOOD", "p2": "GOOD", "p3": "GOOD"}
    bad = {"p1": "bad", "p2": "bad", "p3": "bad"}
    with FaultServer(scripted(always_first)) as url:
        code, err = cli(*judge_args(url, tmp_path, good, bad))
    assert code == 0, err
    pairwise = json.loads((tmp_path / "out" / "judge.json").read_text())["pairwise"]
    assert (pairwise["a_wins"], pairwise["b_wins"], pairwise["ties"]) == (0, 0, 3)
    assert pairwise["position_consistency"] == 0.0 and pairwise["win_rate_a"] == 0.5


def test_unparsable_verdicts_are_reasked_recorded_and_never_ties(cli, tmp_path):
    asked = []

    def judge(messages):
        prompt = messages[0]["content"]
        if "Reference Answer" in prompt:
            return "hmm" if len(messages) == 1 else "[[CORRECT]]"  # fixed by the re-ask
        first, _ = shown_answers(prompt)
        if "STUBBORN" in prompt:
            return f"I refuse ({len(messages)})"  # never a verdict, whatever is asked
        if "TORN" in prompt:
            return '"[[A]]" if A, "[[B]]" if B'  # both: ambiguous
        return "[[A]]" if first.startswith("GOOD") else "[[B]]"

    answers_a = {"p1": "GOOD Helsinki", "p2": "STUBBORN", "p3": "TORN"}
    answers_b = {"p1": "Oslo", "p2": "x", "p3": "y"}
    with FaultServer(scripted(judge, asked)) as url:
        code, err = cli(*judge_args(url, tmp_path, answers_a, answers_b, "--retries", "2"))
    assert code == 0, err
    out = tmp_path / "out"
    records = {(r["id"], r["kind"]): r for r in read_jsonl(out / "judgments.jsonl")}
    assert sorted(records) == sorted(
        [(p, k) for p in ("p1", "p2", "p3") for k in ("ab", "ba")]
        + [("p1", "grade_a"), ("p1", "grade_b")]
    )
    stubborn = records["p2", "ab"]
    assert stubborn["verdict"] is None and stubborn["winner"] is None
    assert [a["reply"] for a in stubborn["attempts"]] == [
        "I refuse (1)",
        "I refuse (3)",  # the re-ask: the reply and a reminder of the format
        "I refuse (5)",
    ]
    assert all(a["reason"].startswith("no verdict") for a in stubborn["attempts"])
    assert records["p3", "ba"]["attempts"][0]["reason"].startswith("ambiguous")
    assert len(records["p1", "grade_a"]["attempts"]) == 2
    assert records["p1", "grade_a"]["verdict"] == "correct"
    reasks = [m for m in asked if len(m) == 3]
    pairwise_reask = next(m for m in reasks if "Reference" not in m[0]["content"])
    assert pairwise_reask[1] == {"role": "assistant", "content": "I refuse (1)"}
    assert "[[A]]" in pairwise_reask[2]["content"] and "[[C]]" in pairwise_reask[2]["content"]
    grade_reask = next(m for m in reasks if "Reference" in m[0]["content"])
    assert "[[CORRECT]]" in grade_reask[2]["content"]

    report = json.loads((out / "judge.json").read_text())
    pairwise = report["pairwise"]
    assert (pairwise["a_wins"], pairwise["ties"], pairwise["unparsable"]) == (1, 0, 2)
    assert pairwise["win_rate_a"] == 1.0  # from the one readable prompt only
    examples = {e["id"]: e for e in report["examples"]}
    assert examples["p2"]["verdict"] == "unparsable"
    assert examples["p2"]["judgments"] == ["I refuse (5)", "I refuse (5)"]
    assert report["graded"]["b"] == {
        "correct": 1,
        "graded": 1,
        "unparsable": 0,
        "accuracy": 1.0,
        "ci_low": report["graded"]["b"]["ci_low"],
        "ci_high": 1.0,
    }


def test_rerun_judges_nothing_twice_and_refuses_other_settings(cli, tmp_path):
    asked = []
    answers = {"p1": "GOOD", "p2": "GOOD", "p3": "GOOD"}
    with FaultServer(scripted(prefers_good, asked)) as url:
        args = judge_args(url, tmp_path, answers, {"p1": "b", "p2": "b", "p3": "b"})
        assert cli(*args)[0] == 0
        first = len(asked)
        assert cli(*args)[0] == 0
        assert len(asked) == first  # everything was judged: no request the second time
        code, err = cli(*args, "--max-judge-tokens", "7")
    assert_one_line_error(code, err, "run.json", "max_judge_tokens", "another --out")
    assert len(read_jsonl(tmp_path / "out" / "judgments.jsonl")) == first


def test_bad_input_is_one_line(cli, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    template = tmp_path / "mine.txt"
    template.write_text("{question} {answer_a}")
    base = ("judge", "--judge", "http://127.0.0.1:9/v1", "--prompts", prompts)
    base += ("--out", tmp_path / "out")
    code, err = cli(*base, "--judge-model", "m", "--a", "x", "--b", "y", "--judge-prompt",
                    template)  # fmt: skip
    assert_one_line_error(code, err, "mine.txt", "{answer_b}")
    code, err = cli(*base, "--a", "x", "--b", "y")
    assert_one_line_error(code, err, "--judge-model")
    code, err = cli(*base, "--judge-model", "m", "--b", "y")
    assert_one_line_error(code, err, "--a SPEC or --answers-a FILE")
    short = answers_file(tmp_path / "a.jsonl", {"p1": "x"})
    with FaultServer(scripted(prefers_good)) as url:
        given = ("--answers-a", short, "--answers-b", short, "--out", tmp_path / "o2")
        code, err = cli(
            "judge", "--judge", url, "--judge-model", "tiny", "--prompts", prompts, *given
        )
    assert_one_line_error(code, err, "--answers-a", "a.jsonl", "no answer for prompt 'p2'")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "p1", "answer": "x"}\n{"id": "p2"}\n')
    code, err = cli(*base, "--judge-model", "m", "--answers-a", broken, "--b", "y")
    assert_one_line_error(code, err, "broken.jsonl:2", '"answer"')
