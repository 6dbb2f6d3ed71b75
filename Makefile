# esrgan-lab: the two commands a fresh machine needs are `make ablation` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

PRESET ?= cpu
DESIGN ?= default
SEEDS  ?=
JOBS   ?= 1

.PHONY: venv test test-all lint bench ablation report clean

venv: $(STAMP)

# torch/torchvision first and pinned (constraints.txt) so that no later install swaps the build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

ablation: $(STAMP)
	@echo "make ablation: the ablation matrix is not built yet (issue 'make ablation')." >&2
	@exit 1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
