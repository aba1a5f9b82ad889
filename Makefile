# visionray: `make run` sets everything up and trains the quickstart; `make test` sets up and tests.
# Everything lands in .venv; nothing is installed system-wide except the optional Debian dataset.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel of torch where there is no NVIDIA GPU: an unpinned `torch` pulls a multi-GB CUDA build.
TORCH_CPU_VERSION ?= 2.13.0
# PyTorch's CPU-only wheel index; where it cannot be reached, pip falls back to its default index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: run test test-fast ui serve bench setup data clean help

help:
	@echo "make run        set up .venv + data, run the quickstart pipeline"
	@echo "make test       set up, run all tests (unit + end-to-end on a real local Ray and MLflow)"
	@echo "make test-fast  unit tests only"
	@echo "make ui         MLflow dashboard on http://127.0.0.1:5000"
	@echo "make serve      the registered champion on http://127.0.0.1:5001/invocations (MODEL=name@alias)"
	@echo "make bench      the bench pipeline (Ray vs plain PyTorch, Ray Data vs DataLoader)"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
ifeq ($(HAS_GPU),1)
	$(PIP) install --quiet "torch>=2.5,<3"
else
	$(PIP) install --quiet --retries 0 --timeout 10 --index-url $(TORCH_CPU_INDEX) "torch==$(TORCH_CPU_VERSION)" \
	  || $(PIP) install --quiet "torch==$(TORCH_CPU_VERSION)"
endif
	$(PIP) install --quiet -e ".[test]"
	touch $@

# The default dataset: Fashion-MNIST from Debian's package when we may install it (root, apt),
# else found via $$VISIONRAY_DATA, else downloaded (with sha256 checks) on first use by the pipeline.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || [ -n "$$VISIONRAY_DATA" ]; then \
	  echo "Fashion-MNIST: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) && echo "Fashion-MNIST: installed"; \
	else \
	  echo "Fashion-MNIST: not found; run 'sudo apt-get install dataset-fashion-mnist' or pass data.allow_download=true"; \
	fi

	@# Jane Austen's novels for `visionray run charlm`: Debian's r-cran-janeaustenr, unpacked without
	@# installing R (apt-get download needs no root); components.data.sources.austen finds it there.
	@dir="$${VISIONRAY_DATA:-$$HOME/.cache/visionray}/janeaustenr"; \
	if [ -d /usr/lib/R/site-library/janeaustenr/data ] || [ -f "$$dir/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb" ]; then \
	  echo "Jane Austen (janeaustenr): found"; \
	elif command -v apt-get >/dev/null && command -v dpkg >/dev/null; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -qq r-cran-janeaustenr >/dev/null 2>&1 || \
	    { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download -qq r-cran-janeaustenr; }) && \
	  mkdir -p "$$dir" && dpkg -x $$tmp/r-cran-janeaustenr_*.deb "$$dir" && rm -rf $$tmp && \
	  echo "Jane Austen (janeaustenr): unpacked in $$dir"; \
	else \
	  echo "Jane Austen (janeaustenr): not found; charlm needs Debian's r-cran-janeaustenr (see docs/pipelines/charlm.md)"; \
	fi

run: setup data
	$(VENV)/bin/visionray run quickstart $(ARGS)
	@echo
	@echo "Next: '. $(VENV)/bin/activate' puts visionray on PATH (or type $(VENV)/bin/visionray), then:"
	@echo "  visionray ui                                   # the dashboard, http://127.0.0.1:5000"
	@echo "  visionray serve fashion-mnist-classifier       # the champion over HTTP (or: make serve)"

test: setup data
	$(PY) -m pytest -q --durations=15 $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(ARGS)

ui: setup
	$(VENV)/bin/visionray ui

MODEL ?= fashion-mnist-classifier@champion
serve: setup
	$(VENV)/bin/visionray serve $(MODEL)

bench: setup data
	$(VENV)/bin/visionray run bench $(ARGS)

clean:
	rm -rf mlruns checkpoints .pytest_cache
