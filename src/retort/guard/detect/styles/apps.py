"""Benign styles: the programs of honest customers, the hardest negatives — a templated batch
job, a benchmark run, a research team's chain-of-thought evaluation with logprobs, a load test
of one's own key, a RAG helpdesk and an agent app, all at machine pace.

Each function fills the records of one group of keys (a group of one here) from the style's
parameters (``styles.STYLES``); a ``(low, high)`` parameter is drawn per key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from retort.guard.detect.styles.benign import OFFSETS_H
from retort.guard.detect.styles.traffic import (
    HOUR,
    KeyTraffic,
    Workers,
    answer,
    ask,
    company,
    draw,
    local_hour,
    pick,
    question,
    terms,
)

BATCH_DOMAINS = (
    ("support ticket", ("billing", "bug", "feature request", "account", "other")),
    ("customer review", ("positive", "negative", "neutral", "mixed")),
    ("insurance claim note", ("auto", "home", "health", "travel", "other")),
    ("job posting", ("engineering", "sales", "operations", "design", "support")),
    ("news snippet", ("politics", "business", "sport", "science", "culture")),
    ("app store review", ("crash", "praise", "pricing", "feature request", "other")),
    ("chat transcript", ("resolved", "escalate", "follow up", "spam")),
    ("survey answer", ("satisfied", "neutral", "unsatisfied")),
    ("email", ("urgent", "routine", "spam", "newsletter")),
    ("forum post", ("question", "bug report", "announcement", "off topic")),
    ("product description", ("electronics", "home", "clothing", "toys", "books")),
    ("research abstract", ("biology", "physics", "computing", "medicine", "economics")),
)
BATCH_OPENERS = (
    "You label {company}'s {domain}s.",
    "{company} {domain} pipeline.",
    "For {company}: one {domain} at a time.",
    "[{company}] {domain} triage job.",
    "As an annotator for {company}, read the {domain} below.",
)
# (instruction, output formats, completion tokens); {labels} is the key's own label order.
BATCH_TASKS = (
    ("Classify it into exactly one of: {labels}.", ("Reply with the category only.",
     'Return JSON {{"label": ...}} and nothing else.', "Output the label, no explanation."),
     (1, 3)),
    ("Does it concern {label}? Answer yes or no.", ("One word.", "Lower case, no period."),
     (1, 1)),
    ("Tag it with up to three of: {labels}.", ("Output comma-separated tags.",
     'Return JSON {{"tags": [...]}} only.'), (2, 8)),
    ("Extract every name, product and place it mentions.", ('Return JSON {{"entities": '
     '[...]}} and nothing else.', "One per line, nothing else."), (6, 30)),
    ("Summarize it in at most {words} words.", ("Summary only.", "No preamble."), (8, 35)),
    ("Translate it into {language}.", ("Output only the translation.",), (15, 60)),
    ("Rate its urgency from 1 (low) to 5 (high).", ("Digit only.", 'JSON {{"urgency": n}}.'),
     (1, 4)),
)  # fmt: skip
LANGUAGES = ("French", "German", "Spanish", "Portuguese", "Japanese", "Italian", "Dutch")


def batch_template(rng) -> tuple[str, tuple[int, int], bool]:
    """One customer's template (``{text}`` marks the item), its completion tokens and whether
    it picks a label (so a confidence from logprobs means something)."""
    domain, labels = pick(rng, BATCH_DOMAINS)
    labels = rng.sample(labels, len(labels))
    task, formats, out_tokens = pick(rng, BATCH_TASKS)
    instruction = task.format(
        labels=", ".join(labels),
        label=labels[0],
        words=rng.randint(10, 25),
        language=rng.choice(LANGUAGES),
    )
    opener = rng.choice(BATCH_OPENERS).format(company=company(rng), domain=domain)
    fmt = rng.choice(formats).format()
    name = domain[0].upper() + domain[1:]
    if rng.random() < 0.5:  # the instructions first, then the item; or around it
        template = f"{opener} {instruction} {fmt}\n\n{name}: {{text}}"
    else:
        template = f"{opener}\n\n{name}: {{text}}\n\n{instruction} {fmt}"
    return template, out_tokens, "{labels}" in task or "{label}" in task


def batch_customer(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """An honest customer's batch job — the hardest negative: ONE prompt template of its own
    (its name, task, label set and output format) filled with thousands of items
    (classification, extraction, short summaries), temperature 0, short outputs, sometimes
    logprobs for a label's confidence, sent by a program at a steady rate, often by cron at
    night."""
    for key in group:
        rng = key.rng
        template, out_tokens, labelling = batch_template(rng)
        items = list(key.corpus.passages) + [q.text for q in key.corpus.prompts]
        rng.shuffle(items)
        use_completions = rng.random() < 0.3
        confidence = labelling and rng.random() < p["logprobs_share"]
        cron = rng.uniform(0, 24) if rng.random() < 0.6 else None  # a nightly job or ad hoc
        day = 0
        for _ in range(draw(rng, p["jobs"])):
            hour = cron if cron is not None else rng.uniform(0, 24)
            start = key.start + day * 86400 + hour * HOUR
            day += rng.randint(1, 2) if cron is not None else 0
            if start >= key.end:
                break
            pool = Workers(rng, start, draw(rng, p["concurrency"]), draw(rng, p["gap_s"]))
            for _ in range(draw(rng, p["items"])):
                ts = pool.send()
                if ts >= key.end:
                    break
                text = template.replace("{text}", items[rng.randrange(len(items))])
                n_out = rng.randint(*out_tokens)
                fields: dict[str, Any] = {"temperature": 0, "max_tokens": out_tokens[1] + 10}
                if use_completions:
                    if confidence:
                        fields["logprobs"] = 5
                    pool.done(key.complete(ts, text, n_out, **fields))
                else:
                    if confidence:
                        fields.update(logprobs=True, top_logprobs=rng.choice((1, 5)))
                    messages = [{"role": "user", "content": text}]
                    pool.done(key.chat(ts, messages, n_out, **fields))


def benchmark_run(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """A one-off evaluation: every prompt of a fixed set (those with a reference answer, or the
    whole set) at temperature 0 at machine rate, maybe with logprobs for scoring, maybe once
    per model; then silence."""
    for key in group:
        rng = key.rng
        prompts = list(key.corpus.by_category())
        if rng.random() < 0.5:
            prompts = [q for q in prompts if q.reference is not None]
        fields: dict[str, Any] = {"temperature": 0, "max_tokens": rng.choice((16, 32, 64, 256))}
        if rng.random() < p["logprobs_share"]:
            fields.update(logprobs=True, top_logprobs=rng.choice((1, 5)))
        if rng.random() < 0.3:
            fields["seed"] = rng.choice((0, 1234, 42))
        start = rng.uniform(key.start, key.end - 6 * HOUR)
        models = (key.model, "retort-small") if rng.random() < p["second_model"] else (key.model,)
        pool = Workers(rng, start, draw(rng, p["concurrency"]), 0.02)
        for model in models:
            key.model = model
            for prompt in prompts:
                text = f"Question: {prompt.text}\nAnswer:" if prompt.reference else prompt.text
                n_out = rng.randint(2, 12) if prompt.reference else rng.randint(30, 200)
                messages = [{"role": "user", "content": text}]
                pool.done(key.chat(pool.send(), messages, n_out, **fields))


def load_tester(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """A developer load-testing their own deployment: one or a few fixed prompts fired by a
    script at machine rate (several concurrent clients, no pause) for a few minutes, once or
    twice; on a small tier most of it comes back 429."""
    for key in group:
        rng = key.rng
        prompts = [pick(rng, key.corpus.prompts).text for _ in range(rng.randint(1, 3))]
        prompts[0] = rng.choice(("Say hello.", "ping", prompts[0], "Write a haiku about load."))
        for _ in range(draw(rng, p["sessions"])):
            start = rng.uniform(key.start, key.end - HOUR)
            stop = start + draw(rng, p["duration_s"])
            pool = Workers(rng, start, draw(rng, p["concurrency"]), 0.0)
            while (ts := pool.send()) < stop:
                messages = [{"role": "user", "content": rng.choice(prompts)}]
                pool.done(key.chat(ts, messages, rng.randint(8, 16), max_tokens=16))


RAG_LAYOUTS = (
    "{product} sources:\n[1] {a}\n[2] {b}\n\nQuestion: {q}",
    "Question from a {product} user: {q}\n\nRelevant passages:\n(1) {a}\n(2) {b}",
    '<context source="{product}">\n{a}\n---\n{b}\n</context>\n{q}',
    "Use these {product} articles.\nArticle 1: {a}\nArticle 2: {b}\nUser asks: {q}",
)


def rag_app(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """A documentation helpdesk behind one key: its own product's system prompt and message
    layout, two retrieved passages and a user's question each, steady volume around the clock
    that dips at night."""
    for key in group:
        rng = key.rng
        product = f"{company(rng)} {rng.choice(('Help Center', 'Docs', 'Wiki', 'Support'))}"
        system = (
            f"You are the help assistant of {product}. Answer only from the context below; "
            "if the answer is not there, say you don't know."
        )
        layout = rng.choice(RAG_LAYOUTS)
        per_hour, offset = draw(rng, p["per_hour"]), rng.choice(OFFSETS_H)
        ts = key.start
        while True:
            ts += rng.expovariate(per_hour * 1.6 / HOUR)
            if ts >= key.end:
                break
            hour = (ts / HOUR + offset) % 24
            if not 8 <= hour <= 22 and rng.random() < 0.75:  # thinning: night is quieter
                continue
            doc = pick(rng, key.corpus.docs)
            content = layout.format(
                product=product,
                a=" ".join(doc.doc.split()[:80]),
                b=pick(rng, key.corpus.passages),
                q=question(rng, doc),
            )
            messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
            key.chat(ts, messages, rng.randint(40, 250), temperature=0.2, max_tokens=400)


EVAL_COT = (
    "Let's think step by step.",
    "Think step by step, then give the answer on the last line.",
    "Let's work this out step by step to be sure we have the right answer.",
)


def eval_researcher(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """A research team evaluating the model on a fixed benchmark with chain-of-thought
    prompting: the prompts with a reference answer in a zero-shot CoT format ("Q: … A: Let's
    think step by step."), sometimes behind a few worked examples, temperature 0, logprobs
    for scoring; a few runs of the same set over one day at machine rate, then silence. The
    hard negative for CoT and sweeps together (benchmark_run with CoT)."""
    for key in group:
        rng = key.rng
        prompts = [q for q in key.corpus.prompts if q.reference is not None]
        prompts = rng.sample(prompts, round(len(prompts) * rng.uniform(0.6, 1.0)))
        cot = rng.choice(EVAL_COT)
        shots = ""
        if rng.random() < p["few_shot"]:  # worked examples left out of the scored set
            examples = prompts[:3]
            prompts = prompts[3:]
            shots = "".join(
                f"Q: {q.text}\nA: {cot} {answer(rng, key.corpus, 40)} So the answer is "
                f"{q.reference}.\n\n"
                for q in examples
            )
        fields: dict[str, Any] = {"temperature": 0, "max_tokens": rng.choice((256, 512))}
        if rng.random() < p["logprobs_share"]:
            fields.update(logprobs=True, top_logprobs=rng.choice((1, 5)))
        if rng.random() < 0.4:
            fields["seed"] = rng.choice((0, 1, 42))
        at = rng.uniform(key.start, max(key.start, key.end - 24 * HOUR))
        for _ in range(draw(rng, p["runs"])):  # a config change between runs
            pool = Workers(rng, at, draw(rng, p["concurrency"]), 0.02)
            for prompt in prompts:
                text = f"{shots}Q: {prompt.text}\nA: {cot}"
                messages = [{"role": "user", "content": text}]
                pool.done(
                    key.chat(pool.send(), messages, draw(rng, p["completion_tokens"]), **fields)
                )
            at = max(pool.free) + rng.uniform(1, 5) * HOUR


# (name, description, the argument it takes): what an agent app gives the model to call.
TOOLS = (
    ("search_docs", "Search the product documentation.", "query"),
    ("get_page", "Fetch one documentation page by its id.", "page_id"),
    ("run_python", "Run a short Python snippet and return its output.", "code"),
    ("lookup_order", "Look up a customer's order.", "order_id"),
    ("get_weather", "Current weather for a city.", "city"),
    ("search_web", "Search the web.", "query"),
    ("create_ticket", "Open a support ticket.", "summary"),
    ("calculator", "Evaluate an arithmetic expression.", "expression"),
    ("send_email", "Send an email to the user.", "body"),
)
AGENT_ROLES = (
    "helps developers with the Python standard library",
    "answers customers' questions and handles their orders",
    "plans trips and answers travel questions",
    "helps analysts explore data with Python",
)


def _tool(name: str, description: str, arg: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": schema},
    }


def agent_task(
    key: KeyTraffic,
    system: str,
    tools: Sequence[tuple[str, str, str]],
    steps: int,
    json_out: bool,
    ts: float,
    p: Mapping[str, Any],
) -> None:
    """One end user's task run by the agent loop: the model calls a tool, the program runs it
    and sends the result straight back, ``steps`` times, then the final answer."""
    rng = key.rng
    doc = pick(rng, key.corpus.docs) if rng.random() < 0.5 else None
    task = question(rng, doc) if doc else ask(rng, pick(rng, key.corpus.prompts))[0]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": task},
    ]
    schemas = [_tool(*t) for t in tools]
    fields: dict[str, Any] = {"tools": schemas, "temperature": 0, "max_tokens": 800}
    for step in range(steps + 1):
        final = step == steps
        body = (
            {**fields, "response_format": {"type": "json_object"}} if final and json_out else fields
        )
        n_out = rng.randint(40, 220) if final else rng.randint(18, 60)
        ts = key.chat(ts, list(messages), n_out, **body)
        if final:
            return
        name, _, arg = rng.choice(tools)
        call = {
            "id": f"call_{step}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": json.dumps({arg: " ".join(terms(task, rng, 3))}),
            },
        }
        result = {
            "ok": True,
            "results": [pick(rng, key.corpus.passages) for _ in range(rng.randint(1, 3))],
        }
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)},
        ]
        ts += draw(rng, p["tool_s"])  # the program runs the tool and sends at once


def agent_app(group: Sequence[KeyTraffic], p: Mapping[str, Any]) -> None:
    """An agent (tool-calling) app behind one key: its own system prompt and tools, each end
    user's task a multi-step conversation the program builds (tool calls, JSON tool results,
    often a JSON ``response_format`` for the final answer), every step sent the moment the
    tool returns: machine timing, many turns, structured output, steady volume that dips at
    night. The hard negative for the timing and structured-output features."""
    for key in group:
        rng = key.rng
        app = f"{company(rng)} {rng.choice(('Assistant', 'Agent', 'Copilot', 'Helper'))}"
        tools = rng.sample(TOOLS, rng.randint(3, 5))
        system = (
            f"You are {app}, an assistant that {rng.choice(AGENT_ROLES)}. Call a tool whenever "
            "you need a fact you do not have; never invent tool results. Keep answers brief."
        )
        json_out = rng.random() < p["json_share"]
        per_hour, offset = draw(rng, p["tasks_per_hour"]), rng.choice(OFFSETS_H)
        ts = key.start
        while True:
            ts += rng.expovariate(per_hour * 1.6 / HOUR)
            if ts >= key.end:
                break
            if not 8 <= local_hour(ts, offset) <= 22 and rng.random() < 0.75:
                continue
            agent_task(key, system, tools, draw(rng, p["steps"]), json_out, ts, p)
