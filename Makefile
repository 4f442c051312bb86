# Warren bundle: build the one-file executable, run it, test it, benchmark it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARCH ?= $(shell $(PYTHON) -c 'import platform; m = platform.machine().lower(); print({"x86_64": "amd64", "aarch64": "arm64"}.get(m, m))')
SOURCE ?= auto
FETCH_ARGS ?=
PAYLOAD_DIR := build/payload/linux-$(ARCH)
PAYLOAD := $(PAYLOAD_DIR)/payload.tar.zst
EXE := dist/warren-linux-$(ARCH)
SOURCES := $(shell find warren_bundle -name '*.py') build/spec/warren.spec
PYTEST_ARGS ?=

.PHONY: all venv payload build run test test-unit lint release bench clean help

all: build

help:
	@echo "make run      build dist/warren-linux-$(ARCH) if needed and run containerd in the foreground"
	@echo "make test     the whole test suite (unit, integration with real containerd, frozen file)"
	@echo "make build    dist/warren-linux-$(ARCH): launcher + verified containerd/runc payload"
	@echo "make payload  fetch, verify and stage the payload only (SOURCE=auto|upstream|mirror|dir|debian)"
	@echo "make release  artifacts + SHA256SUMS + install.sh in dist/"
	@echo "make bench    benchmarks against their baselines (bench/results.json)"
	@echo "make lint     ruff"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[build,test]'
	touch $@

venv: $(VENV)/.installed

payload: $(PAYLOAD)

$(PAYLOAD): $(VENV)/.installed scripts/fetch_and_verify.py $(wildcard checksums/*)
	$(PY) scripts/fetch_and_verify.py --arch $(ARCH) --source $(SOURCE) --out $(PAYLOAD_DIR) $(FETCH_ARGS)

build: $(EXE)

$(EXE): $(PAYLOAD) $(SOURCES) $(VENV)/.installed
	WARREN_PAYLOAD_DIR=$(PAYLOAD_DIR) WARREN_EXE_NAME=warren-linux-$(ARCH) \
	  $(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN \
	  --workpath .pyinstaller --distpath dist build/spec/warren.spec
	@$(EXE) version

run: build
	$(EXE) containerd run

test: build
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check warren_bundle scripts tests bench
	$(VENV)/bin/ruff format --check warren_bundle scripts tests bench

clean:
	rm -rf dist .pyinstaller build/payload build/downloads
