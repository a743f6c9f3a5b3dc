# Two commands do everything on a fresh machine (CPU is enough):
#   make train   -> install, then Stage I GRPO on the embedded default (tiny Qwen2.5-VL + synthetic data)
#   make test    -> install, then the test suite
#   make install-gpu -> on a CUDA machine: torch 2.13.0 (PyPI's CUDA build) + vLLM 0.32.0 + the SLURM launcher
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-gpu train test gpu-site

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

# The offline GPU check (benchmarks/gpu_offline.py) on a machine with its own torch and transformers but no network:
# the pure-Python packages it lacks, unpacked into .gpu-site/ here (where pip reaches a registry), then carried there
# and used as PYTHONPATH=.gpu-site:$$PWD (the versions this project is tested with; none needs a compiler)
GPU_SITE := lightning==2.6.6 lightning-utilities==0.15.3 torchmetrics==1.9.0 fsspec==2026.9.0 omegaconf==2.3.1 \
	hydra-core==1.3.8 antlr4-python3-runtime==4.9.3
gpu-site:
	rm -rf .gpu-site .gpu-wheels
	$(PYTHON) -m pip wheel -q --no-deps -w .gpu-wheels $(GPU_SITE)
	@ls .gpu-wheels | grep -v -- '-none-any.whl$$' && { echo "not pure Python: see above"; exit 1; } || true
	$(PYTHON) -m pip install -q --no-deps --no-compile --target .gpu-site .gpu-wheels/*.whl
	rm -rf .gpu-wheels
	du -sh .gpu-site
