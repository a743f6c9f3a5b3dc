# Two commands do everything on a fresh machine (CPU is enough):
#   make train   -> install, then Stage I GRPO on the embedded default (tiny Qwen2.5-VL + synthetic data)
#   make test    -> install, then the test suite
#   make install-gpu -> on a CUDA machine: torch 2.13.0 (PyPI's CUDA build) + vLLM 0.32.0 + the SLURM launcher
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-gpu train test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # first and pinned: the CPU build (a looser pin pulls CUDA wheels)
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# vllm==0.32.0 pins torch==2.13.0, so pip keeps the project's torch pin; the check fails if a CPU torch was kept
install-gpu:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[gpu,slurm,test]"
	$(BIN)/python -c "import torch, vllm; assert torch.cuda.is_available(), 'torch has no CUDA: use a fresh venv'; \
		print('torch', torch.__version__, 'vllm', vllm.__version__)"
	touch $(STAMP)

train: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/python train.py +stage=infogap $(ARGS)

test: $(STAMP)
	WANDB_MODE=offline $(BIN)/python -m pytest -q $(ARGS)
