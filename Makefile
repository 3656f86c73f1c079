# Two commands do all the set-up: `make study` and `make test` (each creates .venv on first use).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=

# Offline copy of MNIST beside the repository (as in CI); otherwise the public mirrors are used.
MNIST_MIRROR ?= $(if $(wildcard ../shared/datasets/mnist/train-images-idx3-ubyte.gz),$(abspath ../shared/datasets/mnist),)
ifneq ($(MNIST_MIRROR),)
export MNIST_MIRROR
endif
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: study quick test test-fast test-all benchmark install clean automation wheel-check

# A GPU-capable TensorFlow where an NVIDIA GPU answers, the small CPU build elsewhere (override: TF_EXTRA=cpu).
TF_EXTRA ?= $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,$(TF_EXTRA)]'
	touch $(STAMP)

install: $(STAMP)

study: $(STAMP)  ## the whole study (profile full); pass options with ARGS="--profile quick ..."
	$(PYTHON) flows/full_study.py $(ARGS)

quick: $(STAMP)  ## every stage on a slice, in about 3 minutes
	$(PYTHON) flows/full_study.py --profile quick --artifacts-dir artifacts-quick $(ARGS)

# Tiers, marked by tests/conftest.py: unit, flow, deployment, browser; `training` marks a test that trains a model itself.
test-fast: $(STAMP)  ## the unit tests that train nothing (about 2 minutes)
	$(PYTHON) -m pytest -m 'unit and not training and not slow and not service' $(ARGS)

# Two pytest processes (pytest-xdist), each test file on one of them (its module fixtures built once): most flow
# tests wait on servers and process start-ups, and the other process fills the wait. TEST_PROCESSES=0: one process.
TEST_PROCESSES ?= 2
test: $(STAMP)  ## every tier but slow full-size runs and the service set-up
	$(PYTHON) -m pytest -n $(TEST_PROCESSES) --dist loadfile $(ARGS)

test-all: $(STAMP)  ## everything, slow and service included
	$(PYTHON) -m pytest -m '' $(ARGS)

# A Prefect server on a throwaway PostgreSQL cluster (scripts/postgres.sh; Debian's `postgresql`), two
# workers, queueing on a shared folder, cancelling, a crashed night's notification: about 3 minutes.
.PHONY: test-service
test-service: $(STAMP)
	$(PYTHON) -m pytest -m service $(ARGS)

benchmark: $(STAMP)
	$(PYTHON) benchmarks/load_parquet.py
	$(PYTHON) benchmarks/training_speed.py $(ARGS)

# Notify WEBHOOK_URL when full-study/nightly-retrain ends Failed or Crashed (docs/service.md); run it
# again to change the URL. Needs PREFECT_API_URL pointing at the server and the deployments on it.
automation: $(STAMP)  ## make automation WEBHOOK_URL=https://hooks.example.com/...
	$(PYTHON) automations/create.py

# Build the wheel, install it in a fresh venv outside the checkout, run the quick profile from `mnist-study`.
wheel-check:
	scripts/wheel_check.sh

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
