"""Benign styles: people — chat users, programmers, bursty users, writers, students — in
conversations paced like people (the programs of honest customers are in ``apps``).

Each function fills the records of one group of keys (a group of one here) from the style's
parameters (``styles.STYLES``); a ``(low, high)`` parameter is drawn per key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from retort.guard.detect.styles.traffic import (
    TOKENS_PER_WORD,
    KeyTraffic,
    answer,
    ask,
    draw,
    followup,
    pick,
    question,
    terms,
    think_time,
    tokens,
    waking_starts,
)

OFFSETS_H = (-8, -7, -5, -4, -3, 0, 1, 2, 3, 5.5, 8, 9, 10)  # where people live (UTC offsets)
SYSTEMS = (
    "You are a helpful assistant.",
    "You are a friendly assistant. Keep answers short unless asked for detail.",
    "Answer clearly and politely.",
)


def _sampling(key: KeyTraffic) -> dict[str, Any]:
    """The fields a person's chat app sends: most send none, some stream or set a temperature."""
    rng, out = key.rng, {}
    if rng.random() < 0.6:
        out["stream"] = True
    if rng.random() < 0.3:
        out["temperature"] = rng.choice((0.7, 1.0, 0.5))
    return out


def conversation(key: KeyTraffic, ts: float, first: str, turns: int, p: Mapping[str, Any]) -> float:
    """One chat session from ``first``: answers composed from the corpus, follow-ups that
    mostly build on the answer before, a person's reading and typing time between turns."""
    rng = key.rng
    messages = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.3 else []
    text, doc = first, None
    sampling = _sampling(key)
    for turn in range(turns):
        messages.append({"role": "user", "content": text})
        reply = answer(rng, key.corpus, rng.randint(*p["answer_words"]), doc)
        ts = key.chat(ts, list(messages), tokens(reply), **sampling)
        messages.append({"role": "assistant", "content": reply})
        if turn + 1 < turns:
            ts += think_time(rng, p["think_s"])
            if rng.random() < p["refer_back"]:
                text, doc = followup(rng, reply), None
            else:  # a new question in the same chat
                doc = pick(rng, key.corpus.docs) if rng.random() < 0.3 else None
                text = question(rng, doc) if doc else ask(rng, pick(rng, key.corpus.prompts))[0]
    return ts


def chat_user(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """A person in a chat app: a few sessions a day at waking hours (nights off, in their own
    time zone), each a multi-turn conversation whose follow-ups refer to earlier answers, with
    human think time between turns."""
    for key in group:
        rng = key.rng
        offset = rng.choice(OFFSETS_H)
        for ts in waking_starts(rng, key.start, key.end, offset, draw(rng, p["sessions_per_day"])):
            turns = min(1 + int(rng.expovariate(1 / (p["turns"] - 1))), p["max_turns"])
            prompt = pick(rng, key.corpus.by_category("explain", "instruct", "rewrite", "fact"))
            conversation(key, ts, ask(rng, prompt)[0], turns, p)


def coder(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """A programmer asking about the Python standard library in multi-turn chats during the
    working day: the answer quotes the docs, the follow-ups report errors or ask for code."""
    for key in group:
        rng = key.rng
        offset = rng.choice(OFFSETS_H)
        for ts in waking_starts(rng, key.start, key.end, offset, draw(rng, p["sessions_per_day"])):
            doc = pick(rng, key.corpus.docs)
            messages = [{"role": "user", "content": question(rng, doc)}]
            for _ in range(min(1 + int(rng.expovariate(1 / (p["turns"] - 1))), p["max_turns"])):
                code = f"```python\nimport {doc.module}\n\n{doc.qualname}(...)\n```"
                reply = f"{answer(rng, key.corpus, rng.randint(*p['answer_words']), doc)}\n{code}"
                ts = key.chat(ts, list(messages), tokens(reply), stream=True)
                messages.append({"role": "assistant", "content": reply})
                ts += think_time(rng, p["think_s"])
                a = terms(reply, rng, 1)[0]
                messages.append(
                    {
                        "role": "user",
                        "content": rng.choice(
                            (
                                f"I tried {doc.qualname} but I still get a TypeError about {a}.",
                                f"Can you show that code with {a} filled in?",
                                f"In your example, what happens if {a} is None?",
                                followup(rng, reply),
                            )
                        ),
                    }
                )


def bursty_human(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """A person who uses the API in irregular bursts: long silences, then many quick questions
    seconds apart, and now and then the same request retried again and again (a flaky
    connection, an impatient regenerate) until the rate limit answers 429."""
    for key in group:
        rng = key.rng
        offset = rng.choice(OFFSETS_H)
        for ts in waking_starts(rng, key.start, key.end, offset, draw(rng, p["bursts_per_day"])):
            for _ in range(draw(rng, p["burst_requests"])):
                prompt = pick(rng, key.corpus.prompts)
                text, length = ask(rng, prompt)
                if rng.random() < 0.4:
                    ts = conversation(key, ts, text, rng.randint(2, 3), p) + rng.uniform(3, 20)
                    continue
                messages = [{"role": "user", "content": text}]
                retries = draw(rng, p["retries"]) if rng.random() < p["retry_share"] else 1
                for _ in range(retries):
                    ts = key.chat(ts, messages, round(length * TOKENS_PER_WORD))
                    ts += rng.uniform(0.3, 3.0)
                ts += rng.uniform(*p["gap_s"])


# An honest batch job's prompt is its own: the customer's name and task, the label set in its
# own order, its own output format. Drawn from a pool this large, no two customers share one.
WRITING_FORMS = (
    "blog post", "article", "report", "short story", "essay", "newsletter", "speech",
    "press release", "lesson plan", "review", "product description", "cover letter",
)  # fmt: skip
WRITING_OPENERS = ("Write", "Draft", "Can you write", "Please write", "I need", "Help me write")
AUDIENCES = (
    "beginners",
    "a general audience",
    "my team at work",
    "high-school students",
    "investors",
    "our customers",
    "a technical audience",
)
WRITING_NOTES = (
    "Keep the tone friendly.",
    "Make it formal.",
    "Use headings.",
    "Avoid jargon.",
    "Include a short conclusion.",
    "Start with a story.",
    "Use British spelling.",
)
REVISIONS = (
    "Make it shorter.",
    "Can you make the second paragraph more formal?",
    "Rewrite the ending so it is more hopeful.",
    "Add a section about {a}.",
    "Change the title and expand the part about {a}.",
    "I like it, but can you cut the part about {a}?",
)


def writing_prompt(key: KeyTraffic, forms: Sequence[str]) -> str:
    """A request for a piece of long-form writing on a corpus topic, as a person phrases it."""
    rng = key.rng
    form, topic = rng.choice(forms), pick(rng, key.corpus.topics)
    opener = rng.choice(WRITING_OPENERS)
    if form == "cover letter":
        text = f"{opener} a cover letter for a job where I would work with {topic}"
    else:
        text = f"{opener} a {form} about {topic}"
    if rng.random() < 0.5:
        text += f", about {rng.choice((500, 800, 1000, 1200, 1500))} words"
    if rng.random() < 0.5:
        text += f", for {rng.choice(AUDIENCES)}"
    text += "."
    for note in rng.sample(WRITING_NOTES, rng.randint(0, 2)):
        text += f" {note}"
    if rng.random() < 0.25:
        text += f"\n\nHere are my notes: {pick(rng, key.corpus.passages)}"
    return text


def writer(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """A person using the model for long-form writing (articles, reports, stories, cover
    letters on corpus topics): mostly one request a session, now and then a revision or two
    after reading the draft; human timing with a daily rhythm. Long outputs for short
    prompts (≈ 400-1500 completion tokens, a high output/input ratio): the hard negative for
    the volume, ratio and single-turn features."""
    for key in group:
        rng = key.rng
        offset = rng.choice(OFFSETS_H)
        forms = rng.sample(WRITING_FORMS, rng.randint(2, 5))  # what this person writes
        sampling = _sampling(key)
        for ts in waking_starts(rng, key.start, key.end, offset, draw(rng, p["sessions_per_day"])):
            messages = [{"role": "user", "content": writing_prompt(key, forms)}]
            turns = 1 if rng.random() > p["revise_share"] else rng.randint(2, 3)
            for turn in range(turns):
                n_out = draw(rng, p["completion_tokens"])
                reply = answer(rng, key.corpus, round(n_out / TOKENS_PER_WORD))
                ts = key.chat(ts, list(messages), n_out, **sampling)
                if turn + 1 < turns:  # reads the draft, asks for a change
                    ts += think_time(rng, p["read_s"])
                    a = terms(reply, rng, 1)[0]
                    ask_for = rng.choice(REVISIONS).format(a=a)
                    messages += [
                        {"role": "assistant", "content": reply},
                        {"role": "user", "content": ask_for},
                    ]


STUDY_ASKS = (
    "Can you explain it step by step?",
    "Please show your reasoning.",
    "Walk me through how to get the answer.",
    "Explain your steps, I'm studying for a test.",
    "Show your work please.",
    "I don't get it, can you go step by step?",
)
STUDY_FOLLOWUPS = (
    "Can you walk me through that step again?",
    "Why does that step work? Show your reasoning.",
    "Can you explain the steps more simply?",
    "I got a different answer. Can you go through it step by step with me?",
)


def tutor_student(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """A student in multi-turn chats who often asks for the working ("explain step by step",
    "show your reasoning", "walk me through it") on sums, facts, explanations and the docs,
    with follow-ups that build on the answer, at a person's pace after school and in the
    evening: the hard negative for chain-of-thought elicitation."""
    for key in group:
        rng = key.rng
        offset = rng.choice(OFFSETS_H)
        for ts in waking_starts(rng, key.start, key.end, offset, draw(rng, p["sessions_per_day"])):
            if rng.random() < 0.25:
                text = question(rng, pick(rng, key.corpus.docs))
            else:
                text = pick(
                    rng, key.corpus.by_category("arith", "explain", "fact", "classify")
                ).text
            if rng.random() < p["cot_first"]:
                asks = rng.choice(STUDY_ASKS)
                text = f"{text} {asks}" if rng.random() < 0.7 else f"{asks} {text}"
            messages = [{"role": "user", "content": text}]
            turns = min(1 + int(rng.expovariate(1 / (p["turns"] - 1))), p["max_turns"])
            for turn in range(turns):
                reply = answer(rng, key.corpus, draw(rng, p["answer_words"]))
                ts = key.chat(ts, list(messages), tokens(reply))
                if turn + 1 < turns:
                    ts += think_time(rng, p["think_s"])
                    if rng.random() < p["cot_followup"]:
                        nxt = rng.choice(STUDY_FOLLOWUPS)
                    else:
                        nxt = followup(rng, reply)
                    messages += [
                        {"role": "assistant", "content": reply},
                        {"role": "user", "content": nxt},
                    ]
