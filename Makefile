# The README's two commands call `make demo` and `make test`; both create and use .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# ONNX Runtime flavour (mutually exclusive extras): the fastest on this architecture by default (openvino on
# x86-64, cpu elsewhere: core/flavour.py); override with ORT=cpu|openvino|gpu.
ORT ?= $(shell $(PY) core/flavour.py)
FLAVOUR := $(shell $(PY) core/flavour.py $(ORT) || echo invalid)

.PHONY: setup demo test bench protos clean lock lock-upgrade check-flavour

# Every install comes from a lock in locks/ (exact versions and sha256 hashes of every package; docs/installs.md):
# locks/<arch>/<flavour>.txt for the venv, locks/kserve-sdk.txt beside it, locks/bootstrap.txt for the installer.
ARCH := $(shell $(PY) locks/lock.py --arch)
LOCK := locks/$(ARCH)/$(FLAVOUR).txt
# The CPU build of torch (torch-2.13.0+cpu, hashed in the x86-64 locks) lies in this folder; PyTorch's CPU index
# (https://download.pytorch.org/whl/cpu) serves it elsewhere: make setup WHEELS=<folder or index URL>.
WHEELS ?= /opt/wheels
INDEX ?= https://pypi.org/simple
UV := $(BIN)/uv
UV_FROM := --index-url $(INDEX) --find-links $(WHEELS)
# The aarch64 locks leave torch out (its CPU build is not reachable where the locks are written): installed by version.
EXTERNAL := $(if $(filter aarch64,$(ARCH)),"torch==2.13.0")

# The installer: uv at the version and hashes of locks/bootstrap.txt, installed by the venv's own pip.
$(UV): locks/bootstrap.txt | check-flavour
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r locks/bootstrap.txt
	touch $@

# Refused before anything is installed.
check-flavour:
	@test "$(FLAVOUR)" != invalid || { echo "ORT must be one of cpu, openvino, gpu (got '$(ORT)')"; exit 2; }
	@test -f $(LOCK) || { echo "no lock for ORT=$(FLAVOUR) on $(ARCH): $(LOCK) is missing (docs/installs.md)"; exit 2; }

# The stamp names the flavour, so `make setup ORT=cpu` after an openvino install swaps the flavour in place
# (uv pip sync removes whatever the lock does not name, the other flavours included).
$(BIN)/.installed-$(FLAVOUR): pyproject.toml $(wildcard $(LOCK)) locks/kserve-sdk.txt $(UV) | check-flavour
	$(UV) pip sync --quiet --python $(BIN)/python $(UV_FROM) --require-hashes $(LOCK)
	$(if $(EXTERNAL),$(UV) pip install --quiet --python $(BIN)/python $(UV_FROM) --no-deps $(EXTERNAL))
	# ganserve itself: editable, no dependencies (all locked above), built by the locked setuptools
	$(UV) pip install --quiet --python $(BIN)/python --offline --no-deps --no-build-isolation -e .
	# The kserve SDK's model classes check deploy/kserve/*.yaml (tests/deploy); the SDK pins protobuf<7, so it goes
	# beside the venv's packages, not among them, with the last kubernetes client of the classic generator.
	rm -rf $(VENV)/kserve-sdk
	$(UV) pip install --quiet --python $(BIN)/python $(UV_FROM) --require-hashes --no-deps --target $(VENV)/kserve-sdk \
		-r locks/kserve-sdk.txt
	rm -f $(BIN)/.installed-*
	touch $@

setup: $(BIN)/.installed-$(FLAVOUR)

demo: setup
	$(BIN)/ganserve demo

test: setup
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

# The suite on the plain onnxruntime flavour, in its own venv (.venv-cpu), beside the default one.
test-cpu:
	$(MAKE) test VENV=.venv-cpu ORT=cpu

bench: setup
	$(BIN)/ganserve bench --repo model-repository --model srresnet

# Re-resolve the locks: `lock` keeps every pin pyproject.toml and locks/*.in still allow (run it after editing them),
# `lock-upgrade` moves every pin to the newest allowed version (then run make protos and make test: docs/installs.md).
lock: $(UV)
	$(BIN)/python locks/lock.py

lock-upgrade: $(UV)
	$(BIN)/python locks/lock.py --upgrade

protos: setup
	$(BIN)/python -m ganserve.serving.proto.build

clean:
	rm -rf $(VENV) .venv-cpu demo-output
