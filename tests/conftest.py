"""Tiny models and tokenizers built by the tests themselves: no downloads, seconds to run.

``tiny_model_dir`` is a 4-layer Llama (hidden 48) with a byte-level BPE tokenizer trained here
on the built-in quickstart prompts, a ChatML chat template, and EOS = ``<|im_end|>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

PROMPTS = Path(__file__).parents[1] / "src" / "retort" / "quickstart" / "prompts.jsonl"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(vocab_size: int = 300, extra_text: str = ""):
    """A byte-level BPE tokenizer trained in well under a second on the built-in prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()]
    texts.append(extra_text)
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def build_tiny_model(tokenizer, layers: int = 4, hidden: int = 48, seed: int = 0, rows=None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(
        vocab_size=rows or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=eos,
        pad_token_id=eos,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    return model


def save_model(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tiny-teacher")
    return save_model(build_tiny_model(tiny_tokenizer), tiny_tokenizer, folder)


@pytest.fixture(scope="session")
def other_tokenizer_model_dir(tmp_path_factory) -> Path:
    """A tiny model whose tokenizer is not the teacher's (another vocabulary)."""
    tokenizer = train_tokenizer(vocab_size=280, extra_text="zebra quokka xylophone " * 50)
    folder = tmp_path_factory.mktemp("tiny-other")
    return save_model(build_tiny_model(tokenizer, layers=2), tokenizer, folder)


def assert_same_capture(store_a, store_b, atol: float = 1e-4) -> None:
    """Two stores hold the same rows: equal prompt and completion ids and top-k ids, and top-k
    logprobs within ``atol`` (two captures of one teacher by different paths)."""
    rows_b = {r["id"]: r for r in store_b.rows()}
    rows_a = list(store_a.rows())
    assert sorted(r["id"] for r in rows_a) == sorted(rows_b)
    for row in rows_a:
        twin = rows_b[row["id"]]
        for column in ("prompt_token_ids", "completion_token_ids", "topk_ids"):
            assert row[column] == twin[column], (row["id"], column)
        for got, want in zip(row["topk_logprobs"], twin["topk_logprobs"], strict=True):
            assert got == pytest.approx(want, abs=atol)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    """Twelve real prompts from the built-in set (some with references)."""
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:12]]
    return write_jsonl(tmp_path / "prompts.jsonl", records)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_model_dir) -> Path:
    """A store captured from the tiny teacher: 16 prompts, top-k 8, 12 new tokens."""
    from retort.capture.runner import generate
    from retort.config import GenerateConfig

    folder = tmp_path_factory.mktemp("store")
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:16]]
    prompts = write_jsonl(folder / "prompts.jsonl", records)
    config = GenerateConfig(
        teacher=str(tiny_model_dir),
        prompts=prompts,
        out=folder / "store",
        top_k=8,
        max_new_tokens=12,
        temperature=1.0,  # a random tiny model under greedy decoding repeats one token
        batch_size=4,
    )
    generate(config)
    return folder / "store"


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir):
    """`retort serve` over the tiny teacher on 127.0.0.1; yields its /v1 base URL."""
    from retort.serve.app import create_app
    from retort.serve.background import serve_in_thread
    from retort.teachers.local import LocalTeacher

    teacher = LocalTeacher.load(str(tiny_model_dir))
    with serve_in_thread(create_app(teacher, "tiny", max_batch=8, wait_ms=50)) as url:
        yield url


@pytest.fixture
def cli(monkeypatch, capsys):
    """Runs ``retort ARGS`` in this process; returns (exit code, stderr) and keeps stdout as
    ``cli.stdout``."""
    import sys

    from retort.cli.main import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["retort", *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        captured = capsys.readouterr()
        run.stdout = captured.out
        return exit_info.value.code, captured.err

    return run
