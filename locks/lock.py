"""Write the install locks in locks/ with uv's `pip compile`: exact versions and sha256 hashes of every package.

`make lock` (this script) re-resolves each lock from its inputs, keeping every pin the inputs still allow (uv reads
the existing lock as its preferences), so only what pyproject.toml or a locks/*.in file changed moves;
`make lock-upgrade` (`--upgrade`) moves every pin to the newest allowed version. Standard library only: it runs with
whatever Python has uv beside it (`make lock` bootstraps .venv/bin/uv from locks/bootstrap.txt).

Architectures are locked apart (`--python-platform`), not universally: on x86-64 the lock pins the CPU build of torch
(`2.13.0+cpu`, from the wheel folder WHEELS), while PyPI's x86-64 and aarch64 builds of the same version pull the
CUDA libraries. PyTorch's aarch64 CPU build is not reachable from the machines that write these locks, so the
aarch64 locks leave torch and the CUDA-only packages out (EXTERNAL) and `make setup` installs torch there by exact
version from WHEELS. `python locks/lock.py --arch` prints the architecture folder `make setup` reads.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "locks"
INDEX = os.environ.get("INDEX", "https://pypi.org/simple")
WHEELS = os.environ.get("WHEELS", "/opt/wheels")
# What the aarch64 locks leave to `make setup` (torch by exact version from WHEELS) or leave out (CUDA only).
EXTERNAL = re.compile(r"^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)$")
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
PROJECT = ["pyproject.toml", "locks/tools.in"]


@dataclass(frozen=True)
class Lock:
    """One lock file: what it is resolved from and for which platform."""

    path: str
    inputs: tuple[str, ...]
    extras: tuple[str, ...] = ()
    arch: str | None = None  # None: one lock for every platform (pure-Python or no-deps sets)
    manylinux: str = "2_28"
    no_deps: bool = False


def _project(arch: str, flavour: str, manylinux: str = "2_28") -> Lock:
    return Lock(f"{arch}/{flavour}.txt", tuple(PROJECT), (flavour, "train", "dev"), arch, manylinux)


LOCK_FILES = [
    # `make setup [ORT=...]`: the project's venv, one per (architecture, ONNX Runtime flavour)
    _project("x86_64", "openvino"), _project("x86_64", "cpu"), _project("x86_64", "gpu"),
    _project("aarch64", "cpu"),
    _project("aarch64", "gpu", "2_34"),  # onnxruntime-gpu publishes manylinux_2_34 wheels only on aarch64
    # the container (deploy/Containerfile): the serving stage only, no torch
    Lock("x86_64/serve-openvino.txt", tuple(PROJECT), ("openvino",), "x86_64"),
    Lock("aarch64/serve-cpu.txt", tuple(PROJECT), ("cpu",), "aarch64"),
    # the KServe SDK beside the venv, installed --no-deps
    Lock("kserve-sdk.txt", ("locks/kserve-sdk.in",), no_deps=True),
    # benchmark peers, each in its own venv
    Lock("peers/torchserve-x86_64.txt", ("locks/peers/torchserve.in", "locks/tools.in"), arch="x86_64"),
    Lock("peers/torchserve-aarch64.txt", ("locks/peers/torchserve.in", "locks/tools.in"), arch="aarch64"),
    Lock("peers/litserve-x86_64.txt", ("locks/peers/litserve.in", "locks/tools.in"), arch="x86_64"),
    Lock("peers/litserve-aarch64.txt", ("locks/peers/litserve.in", "locks/tools.in"), arch="aarch64"),
    # the installer itself, bootstrapped with the venv's own pip
    Lock("bootstrap.txt", ("locks/bootstrap.in",)),
]


def machine_arch() -> str:
    """The lock folder for this machine (x86_64 or aarch64)."""
    machine = platform.machine().lower()
    if machine not in ARCHES:
        print(f"no lock for architecture {machine!r}: locks/ covers {', '.join(sorted(set(ARCHES.values())))}",
              file=sys.stderr)
        raise SystemExit(2)
    return ARCHES[machine]


def _blocks(text: str) -> list[tuple[str | None, str]]:
    """Split a lock into (package name or None for header lines, the block's text) in order."""
    blocks: list[tuple[str | None, str]] = []
    for line in text.splitlines(keepends=True):
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==", line)
        if match:
            blocks.append((match.group(1).lower(), line))
        elif blocks and blocks[-1][0] is not None and line.startswith((" ", "\t")):
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + line)
        else:
            blocks.append((None, line))
    return blocks


def leave_out_external(text: str) -> str:
    """The lock without torch and the CUDA-only packages (aarch64: `make setup` installs torch itself)."""
    kept = [(name, block) for name, block in _blocks(text) if name is None or not EXTERNAL.match(name)]
    first = next(i for i, (name, _) in enumerate(kept) if name is not None)
    note = ("# torch and the CUDA-only packages are left out: make setup installs torch==2.13.0 (the CPU build) from\n"
            "# WHEELS by exact version (locks/lock.py).\n")
    return "".join(b for _, b in kept[:first]) + note + "".join(b for _, b in kept[first:])


def compile_lock(uv: str, lock: Lock, upgrade: bool) -> None:
    """Resolve one lock into a temp file beside it (seeded with the current pins), check it, then rename it in."""
    target = LOCKS / lock.path
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        if target.exists():
            shutil.copyfile(target, out)  # uv keeps the pins of an existing output file unless --upgrade
        cmd = [uv, "pip", "compile", "--quiet", *lock.inputs, "--python-version", "3.11", "--generate-hashes",
               "--index-url", INDEX, "--custom-compile-command", "make lock", "--output-file", str(out)]
        for extra in lock.extras:
            cmd += ["--extra", extra]
        cmd += ["--python-platform", f"{lock.arch}-manylinux_{lock.manylinux}"] if lock.arch else ["--universal"]
        if Path(WHEELS).is_dir():
            cmd += ["--find-links", WHEELS]
        if lock.no_deps:
            cmd.append("--no-deps")
        if upgrade:
            cmd.append("--upgrade")
        subprocess.run(cmd, cwd=ROOT, check=True)
        text = out.read_text()
        if lock.arch == "aarch64":
            text = leave_out_external(text)
        elif lock.arch == "x86_64":
            torch = re.search(r"^torch==(\S+)", text, re.M)
            if torch and not torch.group(1).endswith("+cpu"):
                raise SystemExit(f"{lock.path}: torch resolved to {torch.group(1)}, PyPI's CUDA build; point WHEELS at "
                                 "a folder (or PyTorch's CPU index) that holds the CPU build torch-2.13.0+cpu")
        out.write_text(text)
        os.replace(out, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest allowed version")
    parser.add_argument("--arch", action="store_true", help="print this machine's lock folder and exit")
    parser.add_argument("--only", default="", help="comma-separated lock paths to write (default: all)")
    args = parser.parse_args(argv)
    if args.arch:
        print(machine_arch())
        return 0
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not uv:
        print("uv not found: `make lock` installs it into .venv from locks/bootstrap.txt", file=sys.stderr)
        return 2
    only = {p for p in args.only.split(",") if p}
    for lock in LOCK_FILES:
        if not only or lock.path in only:
            print(f"locks/{lock.path}", flush=True)
            compile_lock(uv, lock, args.upgrade)
    return 0


if __name__ == "__main__":
    sys.exit(main())
