"""TorchServe as a peer server: set up in its own venv, serving the same network, driven by the same load driver.

The handler runs the TorchScript model the way a TorchServe user would at their strongest CPU setting:
channels_last, under bf16 autocast when the CPU has bf16 hardware (else fp32). Requests and replies are .npy
bytes (shape and dtype travel with the data), posted as application/octet-stream.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".venv-peers" / "torchserve"
# Installed from the peer's lock (exact versions and hashes, locks/peers/torchserve.in is what it resolves).
LOCKS = ROOT / "locks" / "peers"
WHEELS = os.environ.get("WHEELS", "/opt/wheels")  # where the CPU build of torch lies (as for make setup)

HANDLER = '''
import io, os
import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler


class NpyHandler(BaseHandler):
    """Raw .npy tensor in, .npy tensor out; channels_last, bf16 autocast when GANSERVE_PEER_BF16=1."""

    def initialize(self, context):
        model_dir = context.system_properties.get("model_dir")
        self.model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu").eval()
        self.model = self.model.to(memory_format=torch.channels_last)
        self.bf16 = os.environ.get("GANSERVE_PEER_BF16", "0") == "1"
        self.initialized = True

    def handle(self, data, context):
        outs = []
        for row in data:
            body = row.get("body") or row.get("data")
            x = torch.from_numpy(np.load(io.BytesIO(bytes(body)))).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                y = self.model(x)
            buf = io.BytesIO()
            np.save(buf, y.float().numpy())
            outs.append(buf.getvalue())
        return outs
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peer_lock(machine: str | None = None) -> Path:
    """The peer venv's lock for this architecture (x86_64 or aarch64)."""
    machine = (machine or platform.machine()).lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return LOCKS / f"torchserve-{arch}.txt"


def ensure_venv(log=print) -> Path:
    """Create the peer's own venv from its lock once; later runs reuse it."""
    marker = PEER_VENV / ".ready"
    if marker.exists():
        return PEER_VENV
    lock = peer_lock()
    if not lock.exists():
        raise RuntimeError(f"no TorchServe lock for this architecture ({lock.name} missing in locks/peers)")
    log(f"setting up TorchServe in {PEER_VENV} from {lock.relative_to(ROOT)} (one time, ~1-2 min)")
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
    find = ["--find-links", WHEELS] if Path(WHEELS).exists() else []
    subprocess.run(pip + ["--require-hashes", *find, "-r", str(lock)], check=True)
    if "torch==" not in lock.read_text():  # the aarch64 lock leaves torch to its wheel folder (locks/lock.py)
        subprocess.run(pip + [*find, "torch==2.13.0"], check=True)
    marker.touch()
    return PEER_VENV


def has_java() -> bool:
    return shutil.which("java") is not None


class TorchServePeer:
    """Archive a TorchScript model, start TorchServe on 127.0.0.1 (1 worker), post .npy tensors to it."""

    def __init__(self, torchscript_path: Path, work_dir: Path, bf16: bool, log=print):
        self.ts_path, self.work, self.bf16, self.log = Path(torchscript_path), Path(work_dir), bf16, log
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.pool: ThreadPoolExecutor | None = None
        self._conns: asyncio.Queue | None = None

    def start(self, timeout: float = 180.0) -> None:
        venv = ensure_venv(self.log)
        store = self.work / "model_store"
        store.mkdir(parents=True, exist_ok=True)
        (self.work / "handler.py").write_text(HANDLER)
        shutil.copy(self.ts_path, self.work / "model.pt")
        subprocess.run(
            [str(venv / "bin" / "torch-model-archiver"), "--model-name", "peer", "--version", "1.0",
             "--serialized-file", str(self.work / "model.pt"), "--handler", str(self.work / "handler.py"),
             "--export-path", str(store), "--force"],
            check=True,
        )
        self.port, mgmt, metrics = free_port(), free_port(), free_port()
        cfg = self.work / "config.properties"
        cfg.write_text(
            f"inference_address=http://127.0.0.1:{self.port}\nmanagement_address=http://127.0.0.1:{mgmt}\n"
            f"metrics_address=http://127.0.0.1:{metrics}\ndefault_workers_per_model=1\n"
            "install_py_dep_per_model=false\ndisable_system_metrics=true\n"
            # its default 6.5 MB reply limit refuses a x4 SR output of a 256x256 input (12.6 MB as float32)
            "max_request_size=268435456\nmax_response_size=268435456\n"
            f"model_store={store}\nload_models=peer=peer.mar\n"
        )
        env = dict(os.environ, GANSERVE_PEER_BF16="1" if self.bf16 else "0", PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
        env.pop("VIRTUAL_ENV", None)
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
             "--ts-config", str(cfg), "--model-store", str(store)],
            cwd=self.work, env=env, stdout=open(self.work / "torchserve.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"TorchServe exited early; see {self.work / 'torchserve.log'}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/ping")
                status = conn.getresponse().status
                conn.close()
                if status == 200 and self._model_ready():
                    return
            except OSError:
                pass
            time.sleep(1.0)
        raise RuntimeError(f"TorchServe not ready after {timeout:.0f}s; see {self.work / 'torchserve.log'}")

    def _model_ready(self) -> bool:
        try:
            x = np.zeros((1, 3, 8, 8), np.float32)
            self.post_sync(x)
            return True
        except Exception:
            return False

    def post_sync(self, array: np.ndarray, conn: http.client.HTTPConnection | None = None) -> np.ndarray:
        buf = io.BytesIO()
        np.save(buf, array)
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request("POST", "/predictions/peer", body=buf.getvalue(),
                     headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        body = resp.read()
        if own:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"TorchServe answered {resp.status}: {body[:200]!r}")
        return np.load(io.BytesIO(body))

    def sender(self, array: np.ndarray, concurrency: int) -> Any:
        """An async `send()` for the closed-loop driver: one keep-alive connection and thread per in-flight request."""
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        conns: asyncio.Queue = asyncio.Queue()
        for _ in range(concurrency):
            conns.put_nowait(http.client.HTTPConnection("127.0.0.1", self.port, timeout=120))
        loop = asyncio.get_running_loop()

        async def send() -> None:
            conn = await conns.get()
            try:
                await loop.run_in_executor(self.pool, self.post_sync, array, conn)
            finally:
                conns.put_nowait(conn)

        return send

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
                self.proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(self.proc.pid, 9)
