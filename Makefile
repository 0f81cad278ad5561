# The README's two commands call `make demo` and `make test`; both create and use .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# ONNX Runtime flavour (mutually exclusive extras): cpu (default), openvino (x86-64), gpu (CUDA).
ORT ?= cpu

.PHONY: setup demo test bench protos clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[$(ORT),train,dev]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/ganserve demo

test: setup
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

bench: setup
	$(BIN)/ganserve bench --repo model-repository --model srresnet

protos: setup
	$(BIN)/python -m serving.proto.build

clean:
	rm -rf $(VENV) demo-output
