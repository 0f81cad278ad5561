"""How long `ganserve serve` takes to become ready: process start to the READY line, cold and warm cache.

`python -m ganserve.benchmarks.startup --repo models [--runs 3]` starts the server `--runs` times with an emptied cache
folder (cold: every candidate timed and checked) and `--runs` times with the cache the first run wrote (warm),
stops each with SIGTERM once it is ready, and prints one line per start with its wall time and the server's CPU
time, then the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ganserve.core.machine import describe

READY = "ganserve serving: ready"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_to_ready(repo: Path, cache: Path, timeout: float = 300.0) -> dict[str, float]:
    """Start one server on free ports with `cache` as its cache folder; seconds until READY and its CPU seconds."""
    cmd = [sys.executable, "-m", "ganserve.pipeline.cli", "serve", "--repo", str(repo), "--port", "0", "--metrics-port", "-1",
           "--cache-dir", str(cache)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        deadline = start + timeout
        for line in proc.stdout:
            if READY in line:
                return {"ready_s": time.perf_counter() - start, "server_cpu_s": _cpu_seconds(proc.pid)}
            if time.perf_counter() > deadline:
                break
        raise RuntimeError(f"server did not print its READY line within {timeout:.0f} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.startup", description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, required=True, help="model repository to serve")
    p.add_argument("--runs", type=int, default=3, help="cold and warm starts each (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if not args.repo.is_dir() or args.runs < 1:
        print(f"startup: need an existing --repo and --runs >= 1 (got {args.repo}, {args.runs})", file=sys.stderr)
        return 2
    cache = Path(tempfile.mkdtemp(prefix="ganserve-startup-"))
    rows = []
    try:
        for kind in ("cold", "warm"):
            for _ in range(args.runs):
                if kind == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                row = {"start": kind, **time_to_ready(args.repo, cache)}
                rows.append(row)
                print(f"{kind}: ready in {row['ready_s']:.2f} s, server CPU {row['server_cpu_s']:.2f} s", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"CPU: {describe()}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": describe(), "repo": str(args.repo), "starts": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
