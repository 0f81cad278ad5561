"""What the peer servers of `ganserve bench` share: each one's own venv made from a hashed lock, free ports, the
TorchScript they serve, the server process (start, ready, stop) and the HTTP client the closed-loop driver sends
through. A peer (peer_torchserve, peer_litserve) adds its files, its command line and how a tensor travels."""

from __future__ import annotations

import asyncio
import http.client
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ganserve.benchmarks import peer_forward

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venv-peers"  # .venv-peers/<peer>, one venv per peer
LOCKS = ROOT / "locks" / "peers"  # <peer>-<arch>.txt: exact versions and hashes, resolved from <peer>.in
WHEELS = os.environ.get("WHEELS", "/opt/wheels")  # where the CPU build of torch lies (as for make setup)
TORCH = "torch==2.13.0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peer_lock(peer: str, machine: str | None = None) -> Path:
    """A peer venv's lock for this architecture (x86_64 or aarch64)."""
    machine = (machine or platform.machine()).lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return LOCKS / f"{peer}-{arch}.txt"


def ensure_venv(peer: str, log=print) -> Path:
    """Create .venv-peers/<peer> from its lock once (pip --require-hashes, no dependency resolution); later runs
    reuse it. Raises CalledProcessError where a locked package cannot be fetched (offline and not cached)."""
    venv = VENVS / peer
    marker = venv / ".ready"
    if marker.exists():
        return venv
    lock = peer_lock(peer)
    if not lock.exists():
        raise RuntimeError(f"no {peer} lock for this architecture ({lock.name} missing in locks/peers)")
    log(f"setting up {peer} in {venv} from {lock.relative_to(ROOT)} (one time, ~1-2 min)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
    find = ["--find-links", WHEELS] if Path(WHEELS).exists() else []
    subprocess.run(pip + ["--require-hashes", *find, "-r", str(lock)], check=True)
    if "torch==" not in lock.read_text():  # the aarch64 locks leave torch to its wheel folder (locks/lock.py)
        subprocess.run(pip + [*find, TORCH], check=True)
    marker.touch()
    return venv


def server_source(body: str) -> str:
    """A peer's server-side file: peer_forward's source (load, batch forward, .npy codec), then the peer's code."""
    return Path(peer_forward.__file__).read_text() + "\n\n" + body


def write_torchscript(module: Any, example: np.ndarray, path: Path) -> Path:
    """Trace a torch module on `example` (NCHW float32) into the TorchScript file every peer serves."""
    import torch

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's notice: TorchScript is what the peers load
        torch.jit.trace(module.to(memory_format=torch.contiguous_format), torch.from_numpy(example)).save(str(path))
    return path


class HttpPeer:
    """A peer server in its own venv on 127.0.0.1, one keep-alive HTTP/1.1 connection per in-flight request.

    Subclasses set `peer` (the venv and lock name), `route`, and write `prepare()` (its files and command line),
    `encode()` and `decode()` (how a tensor travels as its users send it)."""

    peer = ""
    route = "/"
    label = "peer"

    def __init__(self, torchscript_path: Path, work_dir: Path, bf16: bool, probe_shape: tuple[int, ...] = (1, 3, 8, 8),
                 log=print):
        self.ts_path, self.work, self.bf16, self.log = Path(torchscript_path), Path(work_dir), bf16, log
        self.probe = np.zeros(probe_shape, np.float32)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.pool: ThreadPoolExecutor | None = None

    # -- what a peer writes ---------------------------------------------------------------------------------------
    def prepare(self, venv: Path) -> list[str]:
        """Write the peer's files under self.work, pick self.port; the command line that starts the server."""
        raise NotImplementedError

    def encode(self, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
        raise NotImplementedError

    def decode(self, body: bytes) -> np.ndarray:
        raise NotImplementedError

    def setting(self) -> str:
        """The server, its version and settings, as the report's notes name them."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------------------------
    def version(self) -> str:
        """The peer's version as its lock pins it."""
        match = re.search(rf"^{self.peer}==(\S+)", peer_lock(self.peer).read_text(), re.M)
        return match.group(1) if match else "?"

    @property
    def log_path(self) -> Path:
        return self.work / f"{self.peer}.log"

    def start(self, timeout: float = 180.0) -> None:
        venv = ensure_venv(self.peer, self.log)
        self.work.mkdir(parents=True, exist_ok=True)
        cmd = self.prepare(venv)
        tmp = self.work / "tmp"  # its own temp folder: TorchServe keeps its pid file there, so no other one clashes
        tmp.mkdir(exist_ok=True)
        env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", TMPDIR=str(tmp),
                   **{peer_forward.BF16_ENV: "1" if self.bf16 else "0"})
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(cmd, cwd=self.work, env=env, stdout=open(self.log_path, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Ready when the model answers a small request (a server can say it is up before its worker is)."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited early; see {self.log_path}")
            try:
                self.post_sync(self.probe)
                return
            except (OSError, RuntimeError, ValueError):
                time.sleep(1.0)
        raise RuntimeError(f"{self.label} not ready after {timeout:.0f}s; see {self.log_path}")

    def post_sync(self, array: np.ndarray, conn: http.client.HTTPConnection | None = None) -> np.ndarray:
        """Post one tensor and decode the answer (a new connection unless one is given)."""
        if conn is not None:
            return self._post(conn, *self.encode(array))
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            return self._post(conn, *self.encode(array))
        finally:
            conn.close()

    def _post(self, conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> np.ndarray:
        for attempt in (1, 2):
            try:
                conn.request("POST", self.route, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # a keep-alive connection the server closed while it sat idle (uvicorn closes them after 5 s):
                # reconnect once, as a pooled HTTP client does
                conn.close()
                if attempt == 2:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"{self.label} answered {resp.status}: {data[:200]!r}")
        return self.decode(data)

    def sender(self, array: np.ndarray, concurrency: int) -> Any:
        """An async `send()` for the closed-loop driver: one keep-alive connection and thread per in-flight request;
        the body is encoded once (as the OIP path builds its request once) and every answer decoded."""
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        conns: asyncio.Queue = asyncio.Queue()
        for _ in range(concurrency):
            conns.put_nowait(http.client.HTTPConnection("127.0.0.1", self.port, timeout=600))
        body, headers = self.encode(array)
        loop = asyncio.get_running_loop()

        async def send() -> None:
            conn = await conns.get()
            try:
                await loop.run_in_executor(self.pool, self._post, conn, body, headers)
            except BaseException:
                conn.close()  # a broken connection reconnects on its next request
                raise
            finally:
                conns.put_nowait(conn)

        return send

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's whole process group (its launcher, frontend and workers), SIGKILL to what is left
        after `timeout`; returns once none of them runs (TorchServe refuses to start while an old one lives)."""
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if not self.proc:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + wait
            while time.time() < deadline:
                self.proc.poll()  # reap the launcher
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)
        self.proc.poll()
