# The README's two commands call `make demo` and `make test`; both create and use .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# ONNX Runtime flavour (mutually exclusive extras): the fastest on this architecture by default (openvino on
# x86-64, cpu elsewhere: ganserve/core/flavour.py); override with ORT=cpu|openvino|gpu.
ORT ?= $(shell $(PY) ganserve/core/flavour.py)
FLAVOUR := $(shell $(PY) ganserve/core/flavour.py $(ORT) || echo invalid)

.PHONY: setup demo test bench protos clean

# The stamp names the flavour, so `make setup ORT=cpu` after an openvino install swaps the flavour in place.
$(BIN)/.installed-$(FLAVOUR): pyproject.toml
	@test "$(FLAVOUR)" != invalid || { echo "ORT must be one of cpu, openvino, gpu (got '$(ORT)')"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip uninstall --quiet --yes onnxruntime onnxruntime-openvino onnxruntime-gpu 2>/dev/null || true
	$(BIN)/pip install --quiet -e ".[$(FLAVOUR),train,dev]"
	# The kserve SDK's model classes check deploy/kserve/*.yaml (tests/deploy); the SDK pins protobuf<7, so it goes
	# beside the venv's packages, not among them, with the last kubernetes client of the classic generator.
	rm -rf $(VENV)/kserve-sdk
	$(BIN)/pip install --quiet --no-deps --target $(VENV)/kserve-sdk "kserve==0.21.0" "kubernetes==32.0.1"
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

protos: setup
	$(BIN)/python -m ganserve.serving.proto.build

clean:
	rm -rf $(VENV) .venv-cpu demo-output
