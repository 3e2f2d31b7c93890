"""Attack styles: distillation campaigns as the public record describes them (repeated templates,
logprob and temperature sweeps, chain-of-thought harvesting, broad coverage at machine timing,
hydra clusters of keys behind proxies, extraction hidden among ordinary chat, slow-and-low).

Each function fills the records of one group of keys (the hydra's group is the whole cluster)
from the style's parameters (``styles.STYLES``); a ``(low, high)`` parameter is drawn per key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import cycle
from typing import Any

from retort.guard.detect.styles.benign import OFFSETS_H, chat_user
from retort.guard.detect.styles.traffic import (
    HOUR,
    TIERS,
    KeyTraffic,
    Paced,
    Workers,
    draw,
    pick,
    question,
)

TEMPLATES = (
    "Write a detailed, expert-level explanation of {topic}. Cover the key concepts, common "
    "pitfalls and worked examples.",
    "You are a world-class teacher. Explain {topic} thoroughly, as if writing a textbook "
    "section for advanced students.",
    "Give a comprehensive answer: what is {topic}, how does it work, and why does it matter?",
    "List ten questions an expert would ask about {topic}, and answer each one in depth.",
    "Write a complete tutorial on {topic}, with code examples where relevant.",
    "Answer as an expert assistant would. Topic: {topic}. Provide a long, high-quality response.",
    "Explain {topic} to a smart beginner, then go deeper: edge cases, trade-offs, history.",
    "Write an encyclopedia entry on {topic} with sections and a summary at the end.",
    "What are the most important facts about {topic}? Be exhaustive and precise.",
    "Teach me {topic} from first principles, with exercises and their solutions.",
    "Compare {topic} with the alternatives. When is each the right choice, and why?",
    "Write a FAQ about {topic}: twelve questions people really ask, each fully answered.",
)
COT = (
    "Let's think step by step.",
    "Think it through carefully and show your reasoning before giving the final answer.",
    "Explain your reasoning step by step, then give the final answer on its own line as "
    "'Final answer: ...'.",
    'Think step by step and respond in JSON with the fields "reasoning" and "answer".',
    "Show your full reasoning inside <thinking> tags, then answer.",
    "Walk me through your thought process in detail before you answer.",
)


def _topics(key: KeyTraffic) -> list[str]:
    topics = list(key.corpus.topics)
    key.rng.shuffle(topics)
    return topics


def _hours(key: KeyTraffic, share: float) -> float:
    """A campaign's start: some time in the first ``share`` of the window."""
    return key.start + key.rng.uniform(0, share) * (key.end - key.start)


def template_sweep(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """Templates filled with topic after topic, each asked at several temperatures and seeds,
    with the top logprobs (up to 20) and often n > 1: the most the tier lets out per request,
    by a script pacing itself round the clock. Some keys keep to one or two templates, others
    rotate among five to ten so that no one template dominates the window."""
    for key in group:
        rng = key.rng
        many = rng.random() < p["rotate_share"]
        templates = rng.sample(TEMPLATES, rng.randint(5, 10) if many else rng.randint(1, 2))
        temperatures = rng.choice(((0.0, 0.7, 1.0), (0.0, 0.5, 1.0, 1.5), (1.0,), (0.3, 1.2)))
        top = rng.choice((5, 10, 20))
        n = rng.choice((1, 2, 4))
        pool = Workers(rng, _hours(key, 0.3), draw(rng, p["concurrency"]), draw(rng, p["gap_s"]))
        budget, sent = draw(rng, p["requests"]), 0
        for topic in cycle(_topics(key)):
            prompt = rng.choice(templates).format(topic=topic)
            for temperature in temperatures:
                ts = pool.send()
                if ts >= key.end or sent >= budget:
                    return
                fields = {"temperature": temperature, "logprobs": True, "top_logprobs": top}
                fields.update(max_tokens=2048, n=n, seed=sent)
                messages = [{"role": "user", "content": prompt}]
                pool.done(key.chat(ts, messages, rng.randint(300, 1200), **fields))
                sent += 1


def _night(key: KeyTraffic, p: Mapping[str, Any]) -> float | None:
    """A human-paced key's time zone when it also takes nights off (else None)."""
    rng = key.rng
    return rng.choice(OFFSETS_H) if rng.random() < p["nights_off_share"] else None


def _pace(key: KeyTraffic, start: float, p: Mapping[str, Any]) -> Workers | Paced:
    """Machine workers, or (``human_share`` of the keys) one request at a time at a jittered,
    person-like pace."""
    rng = key.rng
    if rng.random() < p["human_share"]:
        return Paced(rng, start, draw(rng, p["human_gap_s"]), p["sigma"], _night(key, p))
    return Workers(rng, start, draw(rng, p["concurrency"]), draw(rng, p["gap_s"]))


def _cot_question(key: KeyTraffic) -> str:
    rng = key.rng
    if rng.random() < 0.4:
        return question(rng, pick(rng, key.corpus.docs))
    return pick(rng, key.corpus.prompts).text


def cot_harvest(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """Questions from the prompt set and the docs with a chain-of-thought request appended
    ("Let's think step by step", reasoning as JSON, <thinking> tags) to collect reasoning
    traces, big max_tokens. Most keys run several requests in flight and want long traces;
    some send one at a time at a person's jittered pace (log-normal gaps, some with nights
    off), and some harvest short traces (sums and facts: a few hundred tokens)."""
    for key in group:
        rng = key.rng
        suffixes = rng.sample(COT, rng.randint(1, 3))
        pool = _pace(key, _hours(key, 0.4), p)
        lengths = (500, 2500) if rng.random() >= p["short_share"] else (150, 600)
        for _ in range(draw(rng, p["requests"])):
            ts = pool.send()
            if ts >= key.end:
                break
            text = f"{_cot_question(key)} {rng.choice(suffixes)}"
            messages = [{"role": "user", "content": text}]
            fields = {"max_tokens": 4096, "temperature": rng.choice((0.6, 0.7, 1.0))}
            pool.done(key.chat(ts, messages, rng.randint(*lengths), **fields))


def _broad(key: KeyTraffic) -> str:
    """One query of a crawl meant to cover everything: any prompt, doc question, topic or
    passage to summarize."""
    rng = key.rng
    kind = rng.random()
    if kind < 0.35:
        return pick(rng, key.corpus.prompts).text
    if kind < 0.65:
        return question(rng, pick(rng, key.corpus.docs))
    if kind < 0.85:
        return f"Explain {pick(rng, key.corpus.topics)}."
    return f"Summarize this in detail: {pick(rng, key.corpus.passages)}"


def coverage_crawl(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """Broad, diverse single-turn questions over every subject the corpus has, for the whole
    window. Most keys send one every few minutes like clockwork, day and night; some jitter
    their gaps like a person's (log-normal around the same interval, some with nights off)."""
    for key in group:
        rng = key.rng
        interval = draw(rng, p["interval_s"])
        ts = _hours(key, 0.1)
        pace = None
        if rng.random() < p["human_share"]:
            pace = Paced(rng, ts, interval, p["sigma"], _night(key, p))
            ts = pace.send()
        while ts < key.end:
            messages = [{"role": "user", "content": _broad(key)}]
            finished = key.chat(ts, messages, rng.randint(150, 700), max_tokens=1024)
            if pace is None:
                ts += interval * rng.uniform(0.95, 1.05)
            else:
                pace.done(finished)
                ts = pace.send()


def hydra(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """One campaign spread over a cluster of keys (~30) behind a few shared proxy /24s: shared
    templates and chain-of-thought suffix, topics dealt out so the cluster covers them all,
    and synchronized timing — a controller wakes every wave and a share of the keys fire
    within seconds. Each key alone stays under any per-key volume threshold."""
    lead = group[0].rng  # the controller's stream: what the whole cluster shares
    templates = lead.sample(TEMPLATES, 2)
    suffix = lead.choice(COT)
    topics = cycle(_topics(group[0]))
    wave_s, active = draw(lead, p["wave_s"]), draw(lead, p["active_share"])
    ts = _hours(group[0], 0.1)
    while ts < group[0].end:
        for key in group:
            if key.rng.random() >= active:
                continue
            at = ts + key.rng.uniform(0, p["spread_s"])
            for _ in range(key.rng.randint(*p["per_wave"])):
                prompt = f"{key.rng.choice(templates).format(topic=next(topics))} {suffix}"
                fields = {"temperature": 1.0, "logprobs": True, "top_logprobs": 5}
                messages = [{"role": "user", "content": prompt}]
                at = key.chat(at, messages, key.rng.randint(400, 1500), **fields) + 0.5
        ts += wave_s * lead.uniform(0.97, 1.03)


def mixed(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """An attacker who hides extraction among benign-looking chat: the key holds ordinary
    chat sessions at human times and, in between, short machine-timed runs of templated and
    chain-of-thought requests, about ``attack_share`` of the whole."""
    chat_user(group, p["chat"])
    for key in group:
        rng = key.rng
        benign = len(key.records)
        share = p["attack_share"]
        wanted = max(round(benign * share / (1 - share)), p["min_attack"])
        template = rng.choice(TEMPLATES)
        topics = cycle(_topics(key))
        while wanted > 0:
            pool = Workers(rng, rng.uniform(key.start, key.end - HOUR), 2, rng.uniform(1, 4))
            for _ in range(min(rng.randint(5, 20), wanted)):
                text = template.format(topic=next(topics))
                if rng.random() < 0.5:
                    text = f"{text} {rng.choice(COT)}"
                messages = [{"role": "user", "content": text}]
                pool.done(key.chat(pool.send(), messages, rng.randint(400, 1500), max_tokens=2048))
                wanted -= 1


def slow_and_low(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """Extraction kept under every rate alarm: a few templated chain-of-thought requests an
    hour, at random moments round the clock, for days."""
    for key in group:
        rng = key.rng
        template, suffix = rng.choice(TEMPLATES), rng.choice(COT)
        per_hour = draw(rng, p["per_hour"])
        topics = cycle(_topics(key))
        ts = key.start + rng.expovariate(per_hour / HOUR)
        while ts < key.end:
            text = f"{template.format(topic=next(topics))} {suffix}"
            messages = [{"role": "user", "content": text}]
            key.chat(ts, messages, rng.randint(400, 1500), max_tokens=2048)
            ts += rng.expovariate(per_hour / HOUR)


# (task, the labels it asks for): one-word answers, each a label to train a student on.
LABEL_TASKS = (
    ("Is {topic} mainly about {a} or {b}? Answer with one word.", None),
    ("Answer yes or no: is {topic} still widely used today?", ("yes", "no")),
    ("Classify {topic} into one of: {labels}. Reply with the label only.", None),
    ("In one word, what field does {topic} belong to?", None),
    ("Rate how hard {topic} is to learn, 1 to 5. Digit only.", ("1", "2", "3", "4", "5")),
    ("Answer yes or no: is the following text about {topic}?\n\n{passage}", ("yes", "no")),
    ("Which of {labels} best describes this text? One word.\n\n{passage}", None),
)
LABEL_SETS = (
    ("science", "history", "software", "geography", "art"),
    ("positive", "negative", "neutral"),
    ("easy", "medium", "hard"),
    ("data", "text", "network", "math", "time", "files"),
)


def _label_prompt(key: KeyTraffic, tasks: Sequence[tuple[str, Any]]) -> str:
    rng = key.rng
    task, _ = rng.choice(tasks)
    labels = rng.choice(LABEL_SETS)
    a, b = rng.sample(labels, 2)
    if rng.random() < 0.3:  # the prompt set's own short-answer questions, as they are
        return pick(rng, key.corpus.by_category("capital", "classify", "fact", "arith")).text
    return task.format(topic=pick(rng, key.corpus.topics), a=a, b=b, labels=", ".join(labels),
                       passage=pick(rng, key.corpus.passages))  # fmt: skip


def label_harvest(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """Extraction of short answers at scale: classification, yes/no and one-word questions
    over every topic the corpus has (a few task forms in rotation), with the top logprobs
    wherever the tier lets them out (the label's whole distribution is the prize), at
    temperature 0, max_tokens of a few, several requests in flight. Short outputs for longer
    prompts (a low output/input ratio): the attacker the volume and ratio features miss."""
    for key in group:
        rng = key.rng
        tasks = rng.sample(LABEL_TASKS, rng.randint(3, 6))
        top = min(rng.choice((5, 10, 20)), TIERS[key.tier]["top_logprobs"])
        pool = _pace(key, _hours(key, 0.3), p)
        for _ in range(draw(rng, p["requests"])):
            ts = pool.send()
            if ts >= key.end:
                break
            fields: dict[str, Any] = {"temperature": 0, "max_tokens": rng.choice((1, 2, 4, 8))}
            if top:
                fields.update(logprobs=True, top_logprobs=top)
            messages = [{"role": "user", "content": _label_prompt(key, tasks)}]
            pool.done(key.chat(ts, messages, rng.randint(1, 4), **fields))
