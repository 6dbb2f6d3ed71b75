# esrgan-lab: the two commands a fresh machine needs are `make ablation` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

PRESET ?= cpu
DESIGN ?= default
SEEDS  ?=
JOBS   ?= 2
RUNS   ?= runs
REPORT ?= $(PRESET)
MONGO  ?=
# minutes for `make ablation`: the first seeds, then extra seeds for the claims still undecided
# and within reach (analysis/sequential.py); 0: the first seeds only
BUDGET ?= 45

# The MongoDB URL (it may hold a password) reaches the commands through the environment only:
# never on a command line that make echoes or that `ps` shows.
ifneq ($(MONGO),)
export ESRGAN_MONGO := $(MONGO)
endif

.PHONY: venv test test-e2e test-all lint bench weights ablation report clean

venv: $(STAMP)

# torch/torchvision first and pinned (constraints.txt) so that no later install swaps the build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

# The end-to-end tiny ablation (train, log to MongoDB and the file store, analyse, report).
test-e2e: $(STAMP)
	$(PY) -m pytest -m e2e -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# The one step that needs the internet: the weight files of the paper's loss and of the learned
# metrics (about 1.3 GB), verified, into the caches runs search. WEIGHTS="vgg19 lpips" for some.
WEIGHTS ?=
weights: $(STAMP)
	$(PY) -m esrgan.downloads fetch $(WEIGHTS)

# GNU make hands a SIGTERM to the recipe's shell only, which ends without passing it on: with
# --stop-with-parent and the shell's pid ($$$$) the matrix then stops its cells as on SIGTERM.
MATRIX_CMD = ESRGAN_RUNS=$(RUNS) $(PY) experiments/matrix.py run $(DESIGN) --preset $(PRESET) \
	$(if $(SEEDS),--seeds $(SEEDS)) --jobs $(JOBS) --budget $(BUDGET) --stop-with-parent $$$$
REPORT_CMD = $(PY) -m analysis.report --store $(RUNS) --preset $(PRESET) --name $(REPORT)

# The matrix (resumable: completed cells are skipped), then the report, even after a failed
# cell (the report shows what finished; the exit status still says a cell failed). No $(MAKE)
# in the recipe: `make -n ablation` must only print it.
ablation: $(STAMP)
	status=0; $(MATRIX_CMD) || status=$$?; $(REPORT_CMD) || status=$$?; exit $$status

report: $(STAMP)
	$(REPORT_CMD)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
