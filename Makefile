# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
TESTING := $(VENV)/.installed-test
DEMO_OUT ?= runs/demo
# Where pip has no local CPU wheel of torch: TORCH_INDEX=https://download.pytorch.org/whl/cpu (PyTorch's CPU wheels;
# a plain `pip install torch==2.13.0` would pull the multi-GB CUDA build)
TORCH_INDEX ?=

.PHONY: demo test bench clean

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exact: pip then finds the CPU wheel on this machine's disk (or on TORCH_INDEX)
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(TESTING): $(RUNTIME)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(TESTING)

# --overwrite: a second `make demo` replaces the first run (thce refuses a run directory that holds one otherwise)
demo: $(RUNTIME)
	$(BIN)/thce demo --out $(DEMO_OUT) --overwrite

# two pytest-xdist workers (one torch thread each, tests/conftest.py); a test file's tests stay on one worker, so
# a file's module fixtures are built once; the longest files first (conftest LONGEST_FILES), in that order.
# TEST_WORKERS=0: one process, as plain `pytest` runs
TEST_WORKERS ?= 2
test: $(TESTING)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

bench: $(TESTING)
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache
