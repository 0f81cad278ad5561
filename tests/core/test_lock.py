"""The install locks (locks/): in step with pyproject.toml, installed as locked, and the floors the generated code needs."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "locks"
GENERATED = ROOT / "serving" / "proto"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


lock_script = _load("ganserve_lock_script", LOCKS / "lock.py")
PROJECT_LOCKS = [lock for lock in lock_script.LOCK_FILES if "pyproject.toml" in lock.inputs]


def pins(path: Path) -> dict[str, tuple[str, int, list[str]]]:
    """name -> (version, number of hashes, the packages/inputs it is there for) of a lock file."""
    out: dict[str, tuple[str, int, list[str]]] = {}
    for name, block in lock_script._blocks(path.read_text()):
        if name is None:
            continue
        version = re.match(r"^\S+?==(\S+)", block).group(1)
        via = block.split("# via", 1)[1].splitlines() if "# via" in block else []
        via = [line.strip().lstrip("#").strip() for line in via]
        out[canonicalize_name(name)] = (version, block.count("--hash=sha256:"), [v for v in via if v])
    return out


def requirements(lock) -> list[Requirement]:
    """What a lock is resolved from: pyproject's dependencies and the lock's extras, and the locks/*.in files."""
    reqs: list[Requirement] = []
    for source in lock.inputs:
        if source == "pyproject.toml":
            project = tomllib.loads((ROOT / source).read_text())["project"]
            reqs += [Requirement(r) for r in project["dependencies"]]
            for extra in lock.extras:
                reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
        else:
            lines = (ROOT / source).read_text().splitlines()
            reqs += [Requirement(line) for line in (l.split("#", 1)[0].strip() for l in lines) if line]
    return reqs


def test_every_lock_named_by_the_script_exists_and_every_lock_file_is_named() -> None:
    named = {lock.path for lock in lock_script.LOCK_FILES}
    on_disk = {str(p.relative_to(LOCKS)) for p in LOCKS.rglob("*.txt")}
    assert named == on_disk
    assert {"x86_64/openvino.txt", "x86_64/cpu.txt", "x86_64/gpu.txt", "aarch64/cpu.txt", "kserve-sdk.txt",
            "peers/torchserve-x86_64.txt", "peers/litserve-x86_64.txt", "peers/litserve-aarch64.txt",
            "bootstrap.txt"} <= named


@pytest.mark.parametrize("lock", lock_script.LOCK_FILES, ids=lambda lock: lock.path)
def test_each_lock_pins_every_input_exactly_with_hashes(lock) -> None:
    locked = pins(LOCKS / lock.path)
    assert locked, lock.path
    for name, (version, hashes, _) in locked.items():
        assert hashes >= 1, f"{lock.path}: {name}=={version} has no hash"
    for req in requirements(lock):
        name = canonicalize_name(req.name)
        if lock.arch == "aarch64" and lock_script.EXTERNAL.match(name):
            assert name not in locked  # left to make setup (torch) or out (CUDA-only)
            continue
        assert name in locked, f"{lock.path}: {req} is an input but not locked (run make lock)"
        assert req.specifier.contains(locked[name][0], prereleases=True), \
            f"{lock.path}: {name}=={locked[name][0]} does not satisfy {req} (run make lock)"


@pytest.mark.parametrize("lock", PROJECT_LOCKS, ids=lambda lock: lock.path)
def test_lock_holds_no_direct_dependency_pyproject_dropped(lock) -> None:
    """A dependency removed from pyproject.toml (or added to the lock by hand) makes the two disagree."""
    wanted = {canonicalize_name(r.name) for r in requirements(lock)}
    for name, (_, _, via) in pins(LOCKS / lock.path).items():
        if any(v.startswith("ganserve (pyproject.toml)") for v in via):
            assert name in wanted, f"{lock.path}: {name} is locked as ganserve's dependency but pyproject.toml " \
                                   "does not ask for it (run make lock)"


def test_the_x86_64_locks_hash_the_cpu_build_of_torch() -> None:
    for path in ("x86_64/openvino.txt", "x86_64/cpu.txt", "x86_64/gpu.txt", "peers/torchserve-x86_64.txt",
                 "peers/litserve-x86_64.txt"):
        locked = pins(LOCKS / path)
        assert locked["torch"][0] == "2.13.0+cpu", path
        assert not [n for n in locked if n.startswith("nvidia-")], path
    for path in ("x86_64/serve-openvino.txt", "aarch64/serve-cpu.txt"):  # the container's server: no torch
        assert "torch" not in pins(LOCKS / path)
    wheel = Path(lock_script.WHEELS) / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    if wheel.exists():  # the hash in the lock is the file's that installs here
        import hashlib
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert f"--hash=sha256:{digest}" in (LOCKS / "x86_64/openvino.txt").read_text()


def test_the_aarch64_lock_leaves_out_torch_and_only_the_cuda_packages() -> None:
    text = ("# header\n#    make lock\ntorch==2.13.0 \\\n    --hash=sha256:aa\n    # via ganserve (pyproject.toml)\n"
            "nvidia-cublas==13.1 \\\n    --hash=sha256:bb\n    # via torch\ntritonclient==2.41.0 \\\n"
            "    --hash=sha256:cc\n    # via ganserve (pyproject.toml)\ntriton==3.0 \\\n    --hash=sha256:dd\n"
            "torch-model-archiver==0.12.0 \\\n    --hash=sha256:ee\n")
    out = lock_script.leave_out_external(text)
    names = [n for n, _ in lock_script._blocks(out) if n]
    assert names == ["tritonclient", "torch-model-archiver"]
    assert out.startswith("# header\n#    make lock\n# torch and the CUDA-only packages are left out")


def test_this_venv_holds_exactly_the_locked_versions() -> None:
    """make setup installed from the lock of this machine's architecture and flavour (all of it, at those versions)."""
    # the venv's own site-packages only: setuptools puts its _vendor folder (vendored packaging, wheel, ... with
    # their dist-info) on sys.path once anything imports it, e.g. pkg_resources via tritonclient's shared memory
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=site)}
    flavours = {"onnxruntime": "cpu", "onnxruntime-openvino": "openvino", "onnxruntime-gpu": "gpu"}
    flavour = next(f for dist, f in flavours.items() if dist in installed)
    locked = pins(LOCKS / lock_script.machine_arch() / f"{flavour}.txt")
    wrong = {n: (v, installed.get(n)) for n, (v, _, _) in locked.items() if installed.get(n) != v}
    assert not wrong, f"installed differs from the lock (name: (locked, installed)): {wrong}"
    extra = set(installed) - set(locked) - {"ganserve", "torch"}
    assert not extra, f"installed but not locked: {sorted(extra)}"


def _stamp(pattern: str) -> set[Version]:
    found = {Version(m) for p in GENERATED.rglob("*.py") for m in re.findall(pattern, p.read_text(), re.M)}
    assert found
    return found


def _floor(name: str, extra: str | None = None) -> Version:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    req = next(Requirement(r) for r in reqs if canonicalize_name(Requirement(r).name) == name)
    return Version(next(s.version for s in req.specifier if s.operator == ">="))


def test_pyproject_floors_are_at_least_what_the_generated_code_needs() -> None:
    grpc = max(_stamp(r"^GRPC_GENERATED_VERSION = '([\d.]+)'"))
    gencode = max(_stamp(r"^# Protobuf Python Version: ([\d.]+)"))
    assert _floor("grpcio") >= grpc, "the generated *_pb2_grpc.py refuse a grpcio older than the one they name"
    assert _floor("grpcio-tools", "dev") >= grpc
    assert _floor("protobuf") >= gencode
    for lock in PROJECT_LOCKS:  # and the locks install what the committed code was generated by
        locked = pins(LOCKS / lock.path)
        if "grpcio-tools" in locked:
            assert Version(locked["grpcio-tools"][0]) == grpc, lock.path


def test_the_generated_code_check_fails_when_a_proto_changes(tmp_path: Path) -> None:
    from ganserve.serving.proto import build

    protos = tmp_path / "protos"
    shutil.copytree(build.PROTO_DIR, protos)
    assert build.stale_files(build.generate(protos)) == []  # a copy of the sources: current
    images = protos / "ganserve" / "v1" / "images.proto"
    text = images.read_text()
    message = re.search(r"^message (\w+) \{", text, re.M)
    images.write_text(text.replace(message.group(0), message.group(0) + "\n  string added_for_the_test = 999;", 1))
    assert build.stale_files(build.generate(protos)) == ["ganserve/v1/images_pb2.py"]


@pytest.mark.parametrize("peer, needs", [("torchserve", {"torchserve", "torch-model-archiver", "pyyaml"}),
                                         ("litserve", {"litserve", "numpy"})])
def test_each_peer_installs_from_its_lock(peer: str, needs: set[str]) -> None:
    from ganserve.benchmarks import peers

    for machine, arch in (("x86_64", "x86_64"), ("AMD64", "x86_64"), ("aarch64", "aarch64")):
        lock = peers.peer_lock(peer, machine)
        assert lock.name == f"{peer}-{arch}.txt" and lock.exists()
        assert needs <= set(pins(lock))
