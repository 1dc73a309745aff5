# Two commands do all set-up on a fresh machine: `make train` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PROCGEN := "procgen-mirror==0.10.7; python_version >= '3.11' and python_version < '3.13'"

.PHONY: train test test-all lint bench clean-venv

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# CPU-only machines: the pinned CPU build first, so the package's torch range installs nothing more.
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/python -m pip install -q "torch>=2.3,<2.14"; \
	else \
		$(BIN)/python -m pip install -q torch==2.13.0; \
	fi
	$(BIN)/python -m pip install -q -e ".[dev,sweep]"
	@# ProcGen's games (Python 3.11 and 3.12 wheels) without their gym3/gym wrappers, which pin
	@# numpy < 2 and which rtrl_rl does not use (rtrl_rl/envs/procgen_lib.py drives the games).
	$(BIN)/python -m pip install -q --no-deps $(PROCGEN)
	@# Test-only: gym3's libenv, the reference driver in tests/envs/test_procgen_reference.py.
	$(BIN)/python -m pip install -q --no-deps "gym3==0.3.3"
	touch $@

train: $(BIN)/.installed
	$(BIN)/rtrl-train $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(ARGS)

test-all: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "" $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check rtrl_rl tests scripts

bench: $(BIN)/.installed
	$(BIN)/python scripts/bench_grad.py --quick

clean-venv:
	rm -rf $(VENV)
