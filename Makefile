# Quick start: `make demo` and `make test`. Both create .venv and install dgm into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; install it first so nothing pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint clean

$(BIN)/dgm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(BIN)/dgm

install: $(BIN)/dgm

demo: install
	$(BIN)/dgm train nsf --data 8gaussians --out runs/demo --steps 1500 --batch-size 256 --overwrite
	$(BIN)/dgm eval runs/demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info .pytest_cache
