# Quick start: `make demo` and `make test`. Both create .venv and install dgm into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; install it first so nothing pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test walk fuzz lint clean

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

# one pytest worker per core (pytest-xdist; each computes on one thread, tests/conftest.py),
# tests handed out one by one as workers free up
test: install
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=15

# every registered model through eval, score, compare and report: the likelihood labels' directions
walk: install
	DGM_WALK=1 $(BIN)/python -m pytest -q tests/test_likelihood_labels.py

# randomized property and fuzz tests, 20x the cases of the default run (tests/conftest.py)
fuzz: install
	HYPOTHESIS_PROFILE=fuzz DGM_FUZZ_SCALE=20 $(BIN)/python -m pytest -q tests/cli/test_hostile.py tests/models/test_flow_transforms.py tests/models/test_flows.py

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info .pytest_cache
