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
RELEASE_DIR ?= dist
# The static flavour of $(EXE): the same launcher and runtime with the static payload (containerd and
# runc that need no libc of the host), which make release publishes beside it.
STATIC_EXE := dist/warren-linux-$(ARCH)-static
# Its payload must run without glibc too: Debian's sources built statically (--source
# debian-static, cached in /var/cache/warren-build/debian-static), or, for a release from
# upstream's static binaries, STATIC_PAYLOAD_DIR=$(PAYLOAD_DIR) (then one file per architecture).
STATIC_SOURCE ?= debian-static
STATIC_FETCH_ARGS ?=
STATIC_PAYLOAD_DIR ?= build/payload-static/linux-$(ARCH)
STATIC_PAYLOAD := $(STATIC_PAYLOAD_DIR)/payload.tar.zst
# ARM64=1: make release builds and signs the linux-arm64 file too (make release-arm64, below).
# make test sets it (its release and test_arm64 need the arm64 file; VM=0-style opt out: ARM64=0).
ifneq ($(filter test,$(MAKECMDGOALS)),)
ARM64 ?= 1
endif
ARM64 ?= 0
# make test's own `$(MAKE) release` must see it too (a default is not passed down like ARM64=1 is).
export ARM64
ARM64_EXE := dist/warren-linux-arm64
ARM64_CACHE ?= /var/cache/warren-build/arm64
ARM64_STAMP := build/cache/warren-linux-arm64.inputs
SOURCES := $(shell find warren_bundle -name '*.py') build/spec/warren.spec
PYTEST_ARGS ?=
# VM=0: make test without the VM layer (QEMU guests, about 15-20 min on 2 cores).
VM ?= 1

.PHONY: all venv payload build run test test-frozen test-unit test-payloads lint release bench clean help

all: build

help:
	@echo "make run      build dist/warren-linux-$(ARCH) if needed and run containerd in the foreground"
	@echo "make test     make lint, then the whole test suite (unit, integration with real containerd, frozen file),"
	@echo "              then the integration suites again against the frozen file (make test-frozen),"
	@echo "              the static file (make test-static) and booted guests (make test-vm; VM=0 skips)"
	@echo "make build    dist/warren-linux-$(ARCH): launcher + verified containerd/runc payload"
	@echo "make payload  fetch, verify and stage the payload only (SOURCE=auto|upstream|mirror|dir|debian|debian-static)"
	@echo "make payload-static  the static flavour's payload (--source debian-static, cached in /var/cache/warren-build)"
	@echo "make release  artifacts + signed SHA256SUMS + install.sh in dist/ (RELEASE_SIGNING_KEY=key.pem)"
	@echo "make release-arm64  make release with dist/warren-linux-arm64 too (ARM64=1; root, qemu-user)"
	@echo "make test-vm  the release in booted Debian guests under QEMU (hardened bookworm, trixie, bullseye, OpenRC)"
	@echo "make bench    benchmarks against their baselines (bench/results.json)"
	@echo "make lint     ruff (style) and mypy --strict (types)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[build,test]'
	touch $@

venv: $(VENV)/.installed

payload: $(PAYLOAD)

# Which source staged it counts too: `make payload SOURCE=debian-static` over a payload from another
# SOURCE (or FETCH_ARGS) stages it again. The stamp is rewritten only when its line changes.
PAYLOAD_INPUTS := build/payload/.inputs-linux-$(ARCH)
.PHONY: FORCE
FORCE:
$(PAYLOAD_INPUTS): FORCE
	@mkdir -p $(@D)
	@echo '$(SOURCE) $(FETCH_ARGS)' | cmp -s - $@ 2>/dev/null || echo '$(SOURCE) $(FETCH_ARGS)' > $@

$(PAYLOAD): $(PAYLOAD_INPUTS) $(VENV)/.installed scripts/fetch_and_verify.py $(wildcard warren_bundle/fetch/*.py) $(wildcard warren_bundle/payload/*.py) $(wildcard checksums/*)
	$(PY) scripts/fetch_and_verify.py --arch $(ARCH) --source $(SOURCE) --out $(PAYLOAD_DIR) $(FETCH_ARGS)

build: $(EXE)

# Same inputs, same bytes: PyInstaller's module order follows hash order, and times follow
# SOURCE_DATE_EPOCH (the commit's time).
REPRODUCIBLE := PYTHONHASHSEED=0 SOURCE_DATE_EPOCH=$(shell git log -1 --format=%ct 2>/dev/null || echo 0)

# The one file: the static launcher (launcher/launcher.c, musl), the frozen runtime (PyInstaller
# onedir, with its loader and libc: it runs on glibc >= 2.17 and musl alike) and the payload,
# packed by scripts/onefile.py. A launch runs the runtime in place from
# <data-dir>/runtime/<digest> (root) or the user's cache dir, extracted once; never /tmp.
RUNTIME_PYTHON ?= /usr/bin/python3.11
RUNTIME_VENV ?= build/cache/runtime-venv
RUNTIME_WORK ?= build/cache/pyinstaller-runtime
RUNTIME_TREE := build/runtime/warren-linux-$(ARCH)-onedir
RUNTIME := $(RUNTIME_TREE)/.loader
LAUNCHER := build/launcher/warren-launcher-$(ARCH)
LAUNCHER_SOURCES := $(wildcard launcher/*.c launcher/*.h)
# zlib's inflate, from Debian's zlib1g-dev, linked into the musl launcher (only inflate is used).
ZLIB_A ?= /usr/lib/$(shell gcc -dumpmachine)/libz.a
MUSL_GCC ?= musl-gcc

$(LAUNCHER): $(LAUNCHER_SOURCES)
	@mkdir -p $(@D)/include
	@ln -sf /usr/include/zlib.h /usr/include/zconf.h $(@D)/include/
	$(MUSL_GCC) -static -Os -s -Wall -Wextra -Werror -I$(@D)/include -o $@.tmp \
	  launcher/launcher.c launcher/sha256.c $(ZLIB_A)
	@mv -f $@.tmp $@

.PHONY: launcher runtime
launcher: $(LAUNCHER)
runtime: $(RUNTIME)

# Frozen with Debian's python3.11, whose extension modules carry no RUNPATH: the bundled libs are
# found through the executable's RPATH alone.
$(RUNTIME_VENV)/.installed: pyproject.toml
	$(RUNTIME_PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install -q -e '.[build]'
	@touch $@

# The runtime's modules are stored in its PYZ archive, not deflated: the one file deflates the
# whole runtime once (scripts/onefile.py), and inflating each module again at every import was
# the largest single cost of a launch's imports (docs/bench.md).
PYZ_STORED := PYINSTALLER_ZLIB_COMPRESSION_LEVEL=0

$(RUNTIME): $(SOURCES) $(RUNTIME_VENV)/.installed scripts/onefile.py
	@rm -rf $(RUNTIME_TREE)
	$(REPRODUCIBLE) WARREN_ONEDIR=1 WARREN_EXE_NAME=warren-linux-$(ARCH) \
	  PYINSTALLER_CONFIG_DIR=$(abspath $(RUNTIME_WORK))/config $(PYZ_STORED) \
	  $(RUNTIME_VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN \
	  --workpath $(RUNTIME_WORK) --distpath $(dir $(RUNTIME_TREE)) build/spec/warren.spec
	$(REPRODUCIBLE) $(PY) scripts/onefile.py runtime $(RUNTIME_TREE) --python $(RUNTIME_VENV)/bin/python

# The release key: RELEASE_SIGNING_KEY is the path of its private half (PEM, ECDSA P-256), kept
# out of the repository; `make release` refuses to run without it. Its public half is packed into
# every file (scripts/onefile.py pack --release-key) and written into install.sh, and signs
# SHA256SUMS (scripts/sign_release.sh). `make build` without a key makes a file that carries none.
# make test and its parts sign the release they test with a throwaway key made here when none is
# given (a fresh machine has none): it signs nothing anyone installs.
TEST_SIGNING_KEY := $(abspath build/release/test-signing-key.pem)
ifneq ($(filter test test-vm test-frozen test-static test-payloads,$(MAKECMDGOALS)),)
RELEASE_SIGNING_KEY ?= $(TEST_SIGNING_KEY)
endif
RELEASE_SIGNING_KEY ?=
export RELEASE_SIGNING_KEY
MAKE_TEST_KEY = @if [ '$(RELEASE_SIGNING_KEY)' = '$(TEST_SIGNING_KEY)' ] && [ ! -f '$(TEST_SIGNING_KEY)' ]; then \
	  mkdir -p $(dir $(TEST_SIGNING_KEY)) && (umask 077 && openssl genpkey -algorithm EC \
	  -pkeyopt ec_paramgen_curve:P-256 -out '$(TEST_SIGNING_KEY)'); fi
RELEASE_PUBKEY := build/release/release-key.pub
KEY_ARGS := $(if $(RELEASE_SIGNING_KEY),--release-key $(RELEASE_PUBKEY))
KEY_DEPS := $(if $(RELEASE_SIGNING_KEY),$(RELEASE_PUBKEY))

# Rewritten only when the key changes, so the files are packed again exactly then.
$(RELEASE_PUBKEY): FORCE
	$(MAKE_TEST_KEY)
	@mkdir -p $(@D)
	@openssl pkey -in '$(RELEASE_SIGNING_KEY)' -pubout -out $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi

.PHONY: release-key-check
release-key-check:
	$(MAKE_TEST_KEY)
	@if [ -z '$(RELEASE_SIGNING_KEY)' ]; then \
	  echo "error: make release signs SHA256SUMS and needs the release key: RELEASE_SIGNING_KEY=/path/to/key.pem (its private half is never in the repository)" >&2; \
	  exit 2; fi
	@[ -f '$(RELEASE_SIGNING_KEY)' ] || { echo "error: RELEASE_SIGNING_KEY=$(RELEASE_SIGNING_KEY): no such file" >&2; exit 2; }

$(EXE): $(LAUNCHER) $(RUNTIME) $(PAYLOAD) scripts/onefile.py $(KEY_DEPS)
	$(PY) scripts/onefile.py pack --launcher $(LAUNCHER) --runtime $(RUNTIME_TREE) \
	  --payload-dir $(PAYLOAD_DIR) --out $@ $(KEY_ARGS)
	@$(EXE) version
	@# Every module imports, getaddrinfo, idna, a metrics scrape: a bad exclusion fails here.
	@$(EXE) _selfcheck || { rm -f $(EXE); echo "removed $(EXE): it fails its self-check" >&2; exit 1; }

run: build
	$(EXE) containerd run

# Every layer from source (unit, integration, e2e), then the integration suites again with the
# frozen file standing in for `python -m warren_bundle` (WARREN_TEST_EXE): the artifact is the
# product; then the supervisor's lifecycle and reliability suites with the static build (the
# other file `make release` publishes); then the release in booted guests (make test-vm; VM=0
# leaves it out). pytest's exit 5 (no test selected) fails any step. Lint comes first: a change
# that ruff or mypy --strict refuses fails here, and so in .ci/run, before anything is built.
test: lint
	@$(MAKE) --no-print-directory release
	@# tests/e2e/test_upgrade_frozen.py packs its next release from test-payloads' 1.7 staging.
	@$(MAKE) --no-print-directory test-payloads >/dev/null
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-frozen
	$(MAKE) --no-print-directory test-static
	@if [ "$(VM)" = 0 ]; then echo "VM=0: the VM layer (make test-vm) skipped"; \
	else $(MAKE) --no-print-directory test-vm; fi

test-frozen: build
	WARREN_TEST_EXE=$(abspath $(EXE)) $(PY) -m pytest -m "integration and not source_only" $(PYTEST_ARGS)

STATIC_SUITES := tests/integration/test_supervisor_lifecycle.py \
  tests/integration/test_reliability_control.py tests/integration/test_images.py
.PHONY: test-static
test-static: $(STATIC_EXE)
	WARREN_TEST_EXE=$(abspath $(STATIC_EXE)) $(PY) -m pytest -m "integration and not source_only" \
	  $(STATIC_SUITES) $(PYTEST_ARGS)

# The three frozen warrens (containerd 1.6, 1.7, 2.1) that tests/integration/test_upgrades.py
# walks through; cached in /var/cache/warren-test/upgrades (WARREN_TEST_CACHE) by input hash.
test-payloads: $(PAYLOAD) $(VENV)/.installed $(LAUNCHER) $(RUNTIME)
	$(PY) scripts/test_payloads.py --launcher $(LAUNCHER) --runtime $(RUNTIME_TREE)

test-unit: venv
	$(PY) -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

# Booted Debian guests under QEMU (TCG) run the release as its users do (curl | sh, systemd,
# reboots, kill -9, purge): tests/vm/. Guest roots are cached in WARREN_VM_CACHE
# (/var/cache/warren-vm) by suite + package list; each run boots throw-away overlays. Root, and
# qemu-system-x86 qemu-utils debootstrap e2fsprogs. VM_GUESTS: a pytest -k filter.
.PHONY: test-vm
VM_GUESTS ?=
# The upgrade scenario installs over the release, on bookworm, the containerd-1.7 warren of
# test-payloads; on bullseye, the next warren version's static file with the same payload
# (scripts/next_release.py, frozen from the static venv; cached in /var/cache/warren-test).
test-vm: release test-payloads
	WARREN_VM_RUNTIME_VENV=$(abspath $(RUNTIME_VENV)) WARREN_VM_LAUNCHER=$(abspath $(LAUNCHER)) \
	  WARREN_VM_STATIC_PAYLOAD=$(abspath $(STATIC_PAYLOAD_DIR)) \
	  $(PY) -m pytest -m vm tests/vm $(if $(VM_GUESTS),-k '$(VM_GUESTS)') $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check warren_bundle scripts tests bench
	$(VENV)/bin/ruff format --check warren_bundle scripts tests bench
	$(VENV)/bin/mypy

# Benchmarks against baselines measured in the same run (root for the containerd rows); prints the
# table, writes bench/results.json and the README block. BENCH_ARGS: --json, --quick, --only GROUPS.
BENCH_ARGS ?=
bench: build
	$(PY) -m bench.run --exe $(EXE) $(BENCH_ARGS)

clean:
	rm -rf dist .pyinstaller build/payload build/downloads build/runtime build/launcher

# --- release: what this host can build, plus install.sh and SHA256SUMS, in RELEASE_DIR ---------
# The release workflow (.github/workflows/release.yml) builds linux/darwin x amd64/arm64 on native
# runners from upstream artifacts (fetch_and_verify.py --release) and sets RELEASE_REQUIRE_UPSTREAM.
RELEASE_REPO ?= warren-bundle/warren-bundle
RELEASE_REQUIRE_UPSTREAM ?= 0
RELEASE_ASSETS := warren-linux-amd64 warren-linux-arm64 warren-darwin-amd64 warren-darwin-arm64 \
  warren-linux-amd64-static warren-linux-arm64-static
BULLSEYE_ROOT ?= /var/cache/warren-test/bullseye-root

.PHONY: release-static release-sums check-static

# One file per architecture when the payload is static already (upstream's release binaries, as
# release.yml stages them, with STATIC_PAYLOAD_DIR=$(PAYLOAD_DIR)): the runtime carries its own
# libc, so warren-linux-<arch> runs on any Linux and a -static twin would be the same file. With
# Debian's glibc-linked containerd (make run's payload) both flavours are published, and the
# installer takes warren-linux-<arch> where its binaries run, the static one elsewhere.
# ARM64=1 (as .ci/run sets) builds the linux-arm64 file too (root, qemu-user: release-arm64) and
# signs it and its SBOM in the same SHA256SUMS. Without it, no arm64 file is copied into a
# RELEASE_DIR; one already in dist/ is signed there only while it is newer than $(EXE).
ONE_FILE := $(if $(filter $(abspath $(STATIC_PAYLOAD_DIR)),$(abspath $(PAYLOAD_DIR))),1)
# What check-static runs in the bullseye root: the file that must run on any Linux.
ANY_LINUX_EXE := $(if $(ONE_FILE),$(EXE),$(STATIC_EXE))
release: release-key-check build $(if $(ONE_FILE),,$(STATIC_EXE)) $(if $(filter 1,$(ARM64)),$(ARM64_EXE))
	@mkdir -p $(RELEASE_DIR)
	@if [ -n "$(ONE_FILE)" ]; then $(PY) -c 'import json, sys; \
	  r = json.load(open(sys.argv[1])).get("requires", {}); \
	  sys.exit(0 if r.get("linkage") == "static" else "error: one file per architecture needs a " \
	  "static payload, and " + sys.argv[1] + " is " + (r.get("linkage") or "of unrecorded linkage"))' \
	  $(PAYLOAD_DIR)/manifest.json || exit 1; rm -f $(RELEASE_DIR)/$(notdir $(STATIC_EXE)); fi
	@if [ "$(abspath $(EXE))" != "$(abspath $(RELEASE_DIR))/warren-linux-$(ARCH)" ]; then \
	  cp $(EXE) $(if $(ONE_FILE),,$(STATIC_EXE)) $(RELEASE_DIR)/; fi
	@if [ "$(ARM64)" = 1 ]; then \
	  [ "$(abspath $(RELEASE_DIR))" = "$(abspath dist)" ] || cp $(ARM64_EXE) $(RELEASE_DIR)/; \
	elif [ "$(ARCH)" != arm64 ] && [ -f $(ARM64_EXE) ] && [ $(ARM64_EXE) -ot $(EXE) ]; then \
	  echo "removing $(ARM64_EXE): older than $(EXE) (make release-arm64 rebuilds it)"; \
	  rm -f $(ARM64_EXE) $(ARM64_STAMP) $(RELEASE_DIR)/warren-linux-arm64 \
	    $(RELEASE_DIR)/warren-linux-arm64.spdx.json; fi
	@$(MAKE) --no-print-directory release-sums
	@source=$$($(RELEASE_DIR)/warren-linux-$(ARCH) version --json | \
	  $(PY) -c 'import json, sys; print(json.load(sys.stdin)["payload"]["source"])'); \
	if [ "$$source" = debian ]; then \
	  echo "********************************************************************************"; \
	  echo "* NOT A PUBLISHABLE RELEASE: the payload is Debian's containerd and runc"; \
	  echo "* (source debian, as 'warren version' says), not the pinned upstream binaries."; \
	  echo "* Publish only builds staged with 'make payload FETCH_ARGS=--release' (upstream"; \
	  echo "* or --mirror URL), as .github/workflows/release.yml does."; \
	  echo "********************************************************************************"; \
	  if [ "$(RELEASE_REQUIRE_UPSTREAM)" = 1 ]; then exit 1; fi; \
	else echo "payload source: $$source"; fi

# install.sh (pointed at RELEASE_REPO, carrying the public key), each file's SPDX SBOM
# (<file>.spdx.json: `<file> version --sbom`), SHA256SUMS for all of them in RELEASE_DIR, and
# SHA256SUMS.sig (base64 of the DER ECDSA signature; release-key.pub beside it).
release-sums: release-key-check
	@sed "s|^WARREN_DEFAULT_REPO=.*|WARREN_DEFAULT_REPO='$(RELEASE_REPO)'|" scripts/install.sh \
	  > $(RELEASE_DIR)/install.sh
	@chmod 0755 $(RELEASE_DIR)/install.sh
	@cd $(RELEASE_DIR) && for f in $(RELEASE_ASSETS); do [ -f $$f ] || continue; \
	  if ./$$f version --sbom > $$f.spdx.json.tmp 2>/dev/null; then mv -f $$f.spdx.json.tmp $$f.spdx.json; \
	  else rm -f $$f.spdx.json.tmp; echo "note: $$f does not run on this host: its SBOM is made where it is built" >&2; fi; done
	@files=$$(cd $(RELEASE_DIR) && for f in $(RELEASE_ASSETS); do [ ! -f $$f ] || echo $$f; \
	  [ ! -f $$f.spdx.json ] || echo $$f.spdx.json; done) && \
	  scripts/sign_release.sh $(RELEASE_DIR) '$(RELEASE_SIGNING_KEY)' $$files && \
	  echo "$(RELEASE_DIR)/SHA256SUMS (signed: SHA256SUMS.sig):" && cat $(RELEASE_DIR)/SHA256SUMS

.PHONY: payload-static
payload-static: $(STATIC_PAYLOAD)

ifneq ($(abspath $(STATIC_PAYLOAD_DIR)),$(abspath $(PAYLOAD_DIR)))
$(STATIC_PAYLOAD): $(VENV)/.installed scripts/fetch_and_verify.py $(wildcard warren_bundle/fetch/*.py) $(wildcard warren_bundle/payload/*.py)
	$(PY) scripts/fetch_and_verify.py --arch $(ARCH) --source $(STATIC_SOURCE) \
	  --out $(STATIC_PAYLOAD_DIR) $(STATIC_FETCH_ARGS)
endif

release-static: $(STATIC_EXE)
	@mkdir -p $(RELEASE_DIR)
	@[ "$(abspath $(STATIC_EXE))" = "$(abspath $(RELEASE_DIR))/$(notdir $(STATIC_EXE))" ] || \
	  cp $(STATIC_EXE) $(RELEASE_DIR)/
	@$(MAKE) --no-print-directory release-sums

# The same launcher and runtime as $(EXE), with the static payload.
$(STATIC_EXE): $(LAUNCHER) $(RUNTIME) $(STATIC_PAYLOAD) scripts/onefile.py $(KEY_DEPS)
	@$(PY) -c 'import json, sys; r = json.load(open(sys.argv[1])).get("requires", {}); \
	  sys.exit(0 if r.get("linkage") == "static" else \
	  "error: the static flavour needs a static payload, and " + sys.argv[1] + " is " + \
	  (r.get("linkage") or "of unrecorded linkage") + "; make payload-static (or STATIC_PAYLOAD_DIR)")' \
	  $(STATIC_PAYLOAD_DIR)/manifest.json
	$(PY) scripts/onefile.py pack --launcher $(LAUNCHER) --runtime $(RUNTIME_TREE) \
	  --payload-dir $(STATIC_PAYLOAD_DIR) --out $@.tmp $(KEY_ARGS)
	@$@.tmp version | head -n 1 | grep -q '(static build)' || { rm -f $@.tmp; \
	  echo "$@: the file does not say it is the static build" >&2; exit 1; }
	mv -f $@.tmp $@

# The static flavour in a Debian bullseye root (glibc 2.31), by chroot; needs root and debootstrap.
check-static: $(if $(ONE_FILE),release,release-static)
	@[ -x $(BULLSEYE_ROOT)/bin/sh ] || debootstrap --variant=minbase bullseye $(BULLSEYE_ROOT)
	cp $(ANY_LINUX_EXE) $(BULLSEYE_ROOT)/usr/local/bin/warren
	cp $(EXE) $(BULLSEYE_ROOT)/usr/local/bin/warren-dynamic
	@mountpoint -q $(BULLSEYE_ROOT)/proc || mount -t proc proc $(BULLSEYE_ROOT)/proc
	@trap 'umount $(BULLSEYE_ROOT)/proc' EXIT; \
	chroot $(BULLSEYE_ROOT) ldd --version | head -n 1; \
	if chroot $(BULLSEYE_ROOT) /usr/local/bin/warren-dynamic version >/dev/null 2>&1; then \
	  echo "note: the dynamic build runs here too"; \
	else echo "the dynamic build does not run on bullseye (expected: it needs this host's glibc)"; fi; \
	chroot $(BULLSEYE_ROOT) /usr/local/bin/warren version && \
	chroot $(BULLSEYE_ROOT) env WARREN_DATA_DIR=/var/lib/warren-check /usr/local/bin/warren extract && \
	echo "check-static: the static build runs on Debian bullseye"

# --- release-arm64: dist/warren-linux-arm64 built on this amd64 host -----------------------------
# The amd64 file's shape: the launcher cross-compiled static with musl, the runtime frozen in a
# Debian bookworm arm64 root under qemu-user emulation (binfmt) and made self-contained there,
# the arm64 payload (scripts/build_arm64.sh; root; every slow step cached by its inputs in
# ARM64_CACHE, /var/cache/warren-build/arm64), packed as $(EXE) is.
export ARM64_CACHE
.PHONY: release-arm64 arm64-parts
arm64-parts: $(VENV)/.installed
	PYTHON=$(abspath $(PY)) SOURCE=$(SOURCE) FETCH_ARGS='$(FETCH_ARGS)' scripts/build_arm64.sh

# Packed (and self-checked under qemu) again only when a part changed: make test calls release twice.
ARM64_PARTS := build/launcher/warren-launcher-arm64 build/runtime/warren-linux-arm64-onedir \
  build/payload/linux-arm64/payload.json scripts/onefile.py $(KEY_DEPS)
$(ARM64_EXE): arm64-parts scripts/onefile.py $(KEY_DEPS)
	@inputs=$$(find $(ARM64_PARTS) -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); \
	if [ -f $@ ] && [ "$$inputs" = "$$(cat $(ARM64_STAMP) 2>/dev/null)" ]; then \
	  echo "$@: up to date"; exit 0; fi; \
	set -e; rm -f $(ARM64_STAMP); \
	$(PY) scripts/onefile.py pack --launcher build/launcher/warren-launcher-arm64 \
	  --runtime build/runtime/warren-linux-arm64-onedir --payload-dir build/payload/linux-arm64 \
	  --out $@.tmp $(KEY_ARGS); \
	$@.tmp version | head -n 1; \
	$@.tmp _selfcheck >/dev/null || { rm -f $@.tmp; echo "$@: it fails its self-check" >&2; exit 1; }; \
	mv -f $@.tmp $@; mkdir -p $(dir $(ARM64_STAMP)) && echo "$$inputs" > $(ARM64_STAMP)

release-arm64:
	@$(MAKE) --no-print-directory release ARM64=1
