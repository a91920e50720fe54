# Two entry points: `make demo` (set up, train the digits example) and `make test` (set up, run every check).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit clean bench gpu-test test-deepspeed

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[all,test,examples]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/digits.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks tools

typecheck: $(STAMP)
	$(BIN)/mypy src

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[bench]"
	-$(BIN)/python tools/check_public_names.py
	$(BIN)/python benchmarks/run.py

# DeepSpeed ZeRO on the CPU (gloo): kept out of `make test` because DeepSpeed compiles a C++ op the
# first time it is imported (about two minutes on two cores); its tests skip when it is not installed.
test-deepspeed: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[deepspeed]"
	$(BIN)/python -m pytest tests/distributed/test_deepspeed.py

gpu-test: $(STAMP)
	$(BIN)/python -m pytest -m gpu

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
