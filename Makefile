# modelport — the only entry points: demo, test, check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check clean proto upgrade-drill promtool tools image platform-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project metadata or the test pins change. constraints/dev.txt holds pins that only
# the tests need; users' installs (`pip install modelport[...]`) never see them.
$(STAMP): pyproject.toml constraints/dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c constraints/dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/credit_rating/demo.py

# The slowest tests are printed on every run: a test that grows slow is seen where it is added.
# Two processes, a test file each at a time (its module fixtures stay in one process): most tests wait
# on a child process or a server, so the second core is idle in a serial run (docs/performance.md,
# "The test suite"). `PYTEST_WORKERS=0 make test` runs it in one process.
PYTEST_WORKERS ?= 2
test: $(STAMP) tools oidc
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not solo" --durations=25 $(PYTEST_ARGS)
	@# tests that bound a latency run alone: a neighbour on the other core must not count against them
	$(BIN)/python -m pytest -m solo $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Debian packages the suite runs for real: promtool (prometheus) for the alert rules, nginx and HAProxy
# in front of the replica tests, kubectl for its built-in kustomize (deploy/k8s), Chromium for the console's
# browser tests (tests/ui). Installed when missing,
# with sudo unless root; RUNLEVEL=1 keeps the packages' scripts from starting nginx or HAProxy as
# services (the tests start their own on loopback).
SYSTEM_TOOLS := promtool=prometheus nginx=nginx haproxy=haproxy kubectl=kubectl chromium=chromium
tools:
	@$(MAKE) --no-print-directory apt-tools TOOLS="$(SYSTEM_TOOLS)"
# command=package pairs in TOOLS, installed with apt when the command is missing
.PHONY: apt-tools
apt-tools:
	@missing=; for pair in $(TOOLS); do command -v $${pair%%=*} >/dev/null 2>&1 || \
		[ -x /usr/sbin/$${pair%%=*} ] || missing="$$missing $${pair#*=}"; done; \
	[ -z "$$missing" ] || { SUDO=; [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || SUDO=sudo; \
		$$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
		apt-get install -y -q --no-install-recommends $$missing; }
promtool: tools

# The OpenID provider the token tests start on loopback (tests/oidc: oidc-provider, pinned by its
# package-lock.json), installed with the machine's npm when missing; users never need Node.js.
.PHONY: oidc
oidc:
	@[ -d tests/oidc/node_modules ] || npm ci --prefix tests/oidc --no-audit --no-fund

check: $(STAMP)
	$(BIN)/ruff check src tests examples bench deploy tools
	$(BIN)/ruff format --check src tests examples bench deploy tools
	$(BIN)/mypy

# Register the example under an older scikit-learn, then doctor and serve it under ours (docs/upgrades.md).
upgrade-drill: $(STAMP)
	$(BIN)/python examples/credit_rating/upgrade_drill.py

# Regenerate the gRPC modules from serving/protocol/inference.proto (they are committed). grpcio-tools
# 1.72.1 writes protobuf 6.30.0 gencode, which every protobuf runtime from 6.30 to 7.x accepts (the
# current grpcio-tools needs 7, the current tritonclient[grpc] 6): a newer grpcio-tools would raise
# that floor (serving/protocol/__init__.py). It has a venv of its own, out of the test environment's way.
PROTO_VENV := .venv-proto
GRPCIO_TOOLS := grpcio-tools==1.72.1

proto:
	test -x $(PROTO_VENV)/bin/python || $(PYTHON) -m venv $(PROTO_VENV)
	$(PROTO_VENV)/bin/python -m pip install --quiet '$(GRPCIO_TOOLS)'
	cd src && ../$(PROTO_VENV)/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		modelport/serving/protocol/inference.proto

# Every package of the resolved `modelport[all]` has a wheel for macOS arm64, Windows amd64 and Linux
# aarch64 (docs/install.md): uv resolves the set for each platform, then pip picks each package's file
# for that platform from the index (metadata only: nothing is downloaded) and fails on any non-wheel.
# pip widens a macOS tag to older macOS releases itself, not a manylinux one: those are listed.
AARCH64 := manylinux2014_aarch64 $(foreach v,24 26 27 28,manylinux_2_$(v)_aarch64)
PLATFORMS := aarch64-apple-darwin=macosx_14_0_arm64 x86_64-pc-windows-msvc=win_amd64 \
	aarch64-unknown-linux-gnu=$(subst $(eval) ,+,$(AARCH64))

platform-wheels: $(STAMP)
	@set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	for pair in $(PLATFORMS); do \
		target=$${pair%%=*}; tags=$$(echo "$${pair#*=}" | tr '+' ' '); \
		$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform $$target --only-binary :all: \
			--extra all pyproject.toml -o $$scratch/$$target.txt; \
		$(BIN)/python -m pip install --quiet --dry-run --ignore-installed --target $$scratch/t --no-deps \
			--only-binary=:all: $$(for tag in $$tags; do echo --platform $$tag; done) --python-version 3.11 \
			--implementation cp -r $$scratch/$$target.txt --report $$scratch/$$target.json; \
		echo "$$target: $$(grep -c '==' $$scratch/$$target.txt) packages, a wheel for each"; \
	done

clean:
	rm -rf $(VENV) $(PROTO_VENV) .venv-drill .modelport examples/credit_rating/out .mypy_cache .ruff_cache .pytest_cache

# The server image (deploy/Containerfile, docs/deploy.md), built for real with buildah and smoke-run
# (deploy/image/smoke.py): init, register an ONNX model, serve, one keyed request, SIGTERM; then the
# same on a read-only root with tmpfs home and /tmp, as deploy/k8s runs it.
# `BASE=python:3.11-slim-bookworm` (pinned: `…@sha256:<digest>`) builds on the official image; unset, a
# Debian bookworm base is debootstrapped once and kept in buildah's storage (deploy/image/base.sh): no
# image registry is reachable on this machine. vfs storage and chroot isolation: no overlay mounts, no
# user namespaces. No layer cache: vfs copies the whole tree for every cached step (about 3.7 GB a
# build), for a saving of half a minute; the image it replaces is removed.
IMAGE      ?= localhost/modelport:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
LOCAL_BASE := localhost/modelport-base:bookworm
BASE       ?=
BUILDAH    := buildah --storage-driver vfs
# The RUN steps trust the host's CA bundle (a TLS-intercepting proxy's CA, here) through mounts that
# never enter the image (deploy/image/pip.conf).
HOST_CA    := /etc/ssl/certs/ca-certificates.crt
HOST_TRUST := $(if $(wildcard $(HOST_CA)),-v $(HOST_CA):/run/host-ca.crt:ro -v $(CURDIR)/deploy/image/pip.conf:/etc/pip.conf:ro)

IMAGE_TOOLS := buildah=buildah debootstrap=debootstrap
image: $(STAMP)
	@$(MAKE) --no-print-directory apt-tools TOOLS="$(IMAGE_TOOLS)"
	@set -e; base="$(BASE)"; [ -n "$$base" ] || { base=$(LOCAL_BASE); BUILDAH="$(BUILDAH)" sh deploy/image/base.sh $$base; }; \
	previous=$$($(BUILDAH) images --quiet --noheading $(IMAGE) 2>/dev/null || true); start=$$(date +%s); \
	$(BUILDAH) bud --isolation chroot --format docker --pull=false --build-arg BASE=$$base $(HOST_TRUST) \
		-f deploy/Containerfile -t $(IMAGE) .; \
	echo "built $(IMAGE) on $$base in $$(( $$(date +%s) - start )) s"; \
	current=$$($(BUILDAH) images --quiet --noheading $(IMAGE)); \
	[ -z "$$previous" ] || [ "$$previous" = "$$current" ] || $(BUILDAH) rmi $$previous >/dev/null 2>&1 || true; \
	$(BUILDAH) images $(IMAGE)
	BUILDAH="$(BUILDAH)" $(BIN)/python deploy/image/smoke.py $(IMAGE)

# The image's pinned dependencies: the core and the extras grpc, redis, postgres, s3 and oidc, plus the
# setuptools that builds the wheel, for Python 3.11 on Linux, every file's hash. Run after a change to
# pyproject.toml's dependencies (tests/deploy/test_container.py checks the lock covers them).
.PHONY: image-lock
image-lock: $(STAMP)
	$(BIN)/uv pip compile --quiet pyproject.toml deploy/image/build.in --extra grpc --extra redis \
		--extra postgres --extra s3 --extra oidc --python-version 3.11 --python-platform linux --generate-hashes \
		--custom-compile-command "make image-lock" -o deploy/image/requirements.txt
