"""Which ONNX Runtime flavour `make setup` installs on this machine (standard library only: it runs before the venv).

The flavours are mutually exclusive pip extras of ganserve (each provides the `onnxruntime` module):
`openvino` (onnxruntime-openvino: OpenVINO + CPU execution providers, x86-64 Linux/Windows only), `cpu` (plain
onnxruntime, every platform) and `gpu` (onnxruntime-gpu, CUDA). The default is the one measured fastest on the
architecture: on x86-64 the OpenVINO flavour (bf16 on bf16 CPUs, int8 on VNNI, and its CPU provider as the
fallback, so installing it never makes the server's choice worse); elsewhere plain onnxruntime.
`python ganserve/flavour.py` prints the default; `ORT=cpu|openvino|gpu` on the make command line overrides it.
"""

from __future__ import annotations

import platform
import sys

FLAVOURS = ("cpu", "openvino", "gpu")
_X86_64 = {"x86_64", "amd64", "x64"}
_OPENVINO_SYSTEMS = {"linux", "windows"}  # onnxruntime-openvino publishes wheels for these only


def default_flavour(machine: str | None = None, system: str | None = None) -> str:
    """The flavour `make setup` installs when ORT is not given: openvino on x86-64 Linux/Windows, else cpu."""
    machine = (machine if machine is not None else platform.machine()).lower()
    system = (system if system is not None else platform.system()).lower()
    return "openvino" if machine in _X86_64 and system in _OPENVINO_SYSTEMS else "cpu"


def check_flavour(name: str) -> str:
    """`name` if it is a known flavour, else a one-line error (SystemExit 2) listing the known ones."""
    if name not in FLAVOURS:
        print(f"unknown ONNX Runtime flavour {name!r}: use ORT={'|'.join(FLAVOURS)}", file=sys.stderr)
        raise SystemExit(2)
    return name


if __name__ == "__main__":
    print(check_flavour(sys.argv[1]) if len(sys.argv) > 1 else default_flavour())
