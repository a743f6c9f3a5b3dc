# Two commands do everything on a fresh machine (CPU is enough):
#   make train   -> install, then Stage I GRPO on the embedded default (tiny Qwen2.5-VL + synthetic data)
#   make test    -> install, then the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # first and pinned: the CPU build (a looser pin pulls CUDA wheels)
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/python train.py +stage=infogap $(ARGS)

test: $(STAMP)
	WANDB_MODE=offline $(BIN)/python -m pytest -q $(ARGS)
