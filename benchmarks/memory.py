"""Peak memory of large image requests against the server's memory budget, inside a real memory limit.

    python -m ganserve.benchmarks.memory --repo models --model srresnet [--sizes 1024,2048] [--limit-mib 6144]
        [--burst 4] [--server-arg ...] [--out benchmarks/results/memory]

Every scenario starts a fresh `ganserve serve` (one model) inside a cgroup with a memory limit (cgroup v1 or v2,
whichever this machine mounts writable), so the server's peak RSS (VmHWM) is that scenario's alone, and a request
that would take more than the limit gets the server OOM-killed there and only there. Scenarios: one SIZE² request
with tiling refused by the client (`tile_size=0`) and one with the server's default tiling, for each size; then a
burst of `--burst` concurrent untiled-asked requests of the first size. For each: HTTP status, the server's peak RSS,
whether it survived. With `--queue-budget-mib M` the burst runs once more under `--max-memory-mib M`, small enough
that not all of it fits at once: the report then shows the most memory the server admitted at any moment (sampled
from /metrics every 50 ms) against that budget, and when each answer came. `--only-burst` skips the single requests.
Prints the CPU first; writes results.json and results.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from ganserve.benchmarks.large_image import test_picture
from ganserve.core.machine import cpu_info
from ganserve.serving.server import _READY_RE

CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup/unified")


class Cgroup:
    """A memory cgroup of its own (v1 or v2), created for one server and removed after it."""

    def __init__(self, limit_bytes: int) -> None:
        name = f"ganserve-bench-{os.getpid()}"
        if (CGROUP_V1 / "cgroup.procs").exists():
            self.path, self.limit_file = CGROUP_V1 / name, "memory.limit_in_bytes"
        elif (CGROUP_V2 / "cgroup.procs").exists():
            self.path, self.limit_file = CGROUP_V2 / name, "memory.max"
        else:
            raise SystemExit("no writable memory cgroup here (needs /sys/fs/cgroup/memory or /sys/fs/cgroup/unified)")
        self.path.mkdir(exist_ok=True)
        (self.path / self.limit_file).write_text(str(limit_bytes))
        if self.limit_file == "memory.limit_in_bytes":  # v1: no swap either, so the limit is the limit
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                try:
                    swap.write_text(str(limit_bytes))
                except OSError:
                    pass

    def wrap(self, cmd: list[str]) -> list[str]:
        """The command, started inside this cgroup (the shell joins it, then execs the command)."""
        return ["sh", "-c", f'echo $$ > "{self.path / "cgroup.procs"}" && exec "$@"', "sh", *cmd]

    def oom_kills(self) -> int:
        events = self.path / ("memory.oom_control" if self.limit_file == "memory.limit_in_bytes" else "memory.events")
        text = events.read_text() if events.exists() else ""
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def _vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """`ganserve serve` on one model, in a cgroup, with its HTTP port and a VmHWM sampler (the process may die)."""

    def __init__(self, repo: Path, cgroup: Cgroup, extra: list[str]) -> None:
        cmd = [sys.executable, "-m", "ganserve.pipeline.cli", "serve", "--repo", str(repo), "--port", "0",
               "--http-port", "0", "--metrics-port", "-1", "--max-pixels", str(4096 * 4096), *extra]
        self.proc = subprocess.Popen(cgroup.wrap(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited before it was ready:\n" + "".join(self.lines[-20:]))
            self.lines.append(line)
            match = _READY_RE.search(line)
            if match:
                self.http_port = int(match.group(3))
                break
        else:
            raise RuntimeError("server not ready in 300 s")
        threading.Thread(target=self._drain, daemon=True).start()
        self.peak = 0.0
        self.in_flight_peak = 0.0  # the most memory the server admitted at once (bytes, from /metrics)
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()
        threading.Thread(target=self._sample_admitted, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def _sample(self) -> None:
        while not self._stop.is_set() and self.proc.poll() is None:
            try:
                self.peak = max(self.peak, _vm_hwm_mib(self.proc.pid))
            except OSError:
                return
            self._stop.wait(0.05)

    def _sample_admitted(self) -> None:
        while not self._stop.is_set() and self.proc.poll() is None:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5).read().decode()
            except (urllib.error.URLError, ConnectionError, OSError):
                text = ""
            for line in text.splitlines():
                if line.startswith("ganserve_memory_in_flight_bytes"):
                    self.in_flight_peak = max(self.in_flight_peak, float(line.rsplit(" ", 1)[1]))
            self._stop.wait(0.05)

    def stop(self) -> dict:
        self._stop.set()
        alive = self.proc.poll() is None
        if alive:
            self.proc.terminate()
        code = self.proc.wait(timeout=120)
        return {"survived": alive, "exit_code": code, "peak_rss_mib": round(self.peak, 1),
                "admitted_peak_mib": round(self.in_flight_peak / 2**20, 1)}


def _post(port: int, model: str, png: bytes, tile: int | None, timeout: float = 1800) -> dict:
    query = "" if tile is None else f"?tile_size={tile}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{model}/transform{query}", data=png,
                                     method="POST")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            body = reply.read()
            size = Image.open(io.BytesIO(body)).size
            return {"status": reply.status, "output": list(size), "wall_s": round(time.perf_counter() - t0, 2),
                    "tiles": int(reply.headers.get("X-Ganserve-Runs", "0") or 0)}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "error": json.loads(exc.read() or b"{}").get("error", ""),
                "wall_s": round(time.perf_counter() - t0, 2)}
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        return {"status": None, "error": f"{type(exc).__name__}: {exc}", "wall_s": round(time.perf_counter() - t0, 2)}


def scenario(repo: Path, model: str, limit: int, extra: list[str], pictures: list[bytes], tile: int | None) -> dict:
    """Start a server in a fresh cgroup, warm it with one small request, send `pictures` at once, report."""
    cgroup = Cgroup(limit)
    try:
        server = Server(repo, cgroup, extra)
        _post(server.http_port, model, _small_png(), None)
        baseline = _vm_hwm_mib(server.proc.pid)
        replies: list[dict] = [{} for _ in pictures]

        def send(i: int) -> None:
            replies[i] = _post(server.http_port, model, pictures[i], tile)
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(pictures))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result = server.stop()
        budget = next((line.strip() for line in server.lines if "memory budget" in line), "")
        return {"replies": replies, "baseline_rss_mib": round(baseline, 1), **result, "oom_kills": cgroup.oom_kills(),
                "budget_line": budget[-200:]}
    finally:
        cgroup.remove()


def _small_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(test_picture(size)).save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.memory", description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--model", default="srresnet")
    p.add_argument("--sizes", default="1024,2048")
    p.add_argument("--limit-mib", type=int, default=6144, help="the cgroup's memory limit for each server")
    p.add_argument("--burst", type=int, default=4, help="concurrent untiled-asked requests of the first size")
    p.add_argument("--queue-budget-mib", type=int, default=0,
                   help="run the burst once more under this --max-memory-mib, so part of it must wait")
    p.add_argument("--only-burst", action="store_true", help="skip the single-request scenarios")
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--label", default="", help="a name for this run in the report (e.g. before/after)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if not (args.repo / args.model).is_dir():
        print(f"error: {args.repo / args.model}: no such model folder", file=sys.stderr)
        return 2
    info = cpu_info()
    print(f"[memory] {info['cpu_model']} ({info['logical_cpus']} logical CPUs; {', '.join(info['isa'])})"
          f"; {args.model}; cgroup limit {args.limit_mib} MiB", flush=True)
    with tempfile.TemporaryDirectory() as tmp:  # a repository of the one model
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / args.model).symlink_to((args.repo / args.model).resolve())
        limit = args.limit_mib * 2**20
        rows = []
        sizes = [int(s) for s in args.sizes.split(",") if s]
        for size in [] if args.only_burst else sizes:
            png = _png(size)
            for tile, what in ((0, "untiled asked"), (None, "server default tiling")):
                row = {"size": size, "requests": 1, "asked": what,
                       **scenario(repo, args.model, limit, args.server_arg, [png], tile)}
                print(f"[memory] {size}² {what}: {json.dumps(row)}", flush=True)
                rows.append(row)
        if args.burst > 1:
            png = _png(sizes[0])
            row = {"size": sizes[0], "requests": args.burst, "asked": "untiled asked, concurrent",
                   **scenario(repo, args.model, limit, args.server_arg, [png] * args.burst, 0)}
            print(f"[memory] burst: {json.dumps(row)}", flush=True)
            rows.append(row)
        if args.burst > 1 and args.queue_budget_mib:
            png = _png(sizes[0])
            budget = [f"--max-memory-mib={args.queue_budget_mib}"]
            row = {"size": sizes[0], "requests": args.burst,
                   "asked": f"untiled asked, concurrent, budget {args.queue_budget_mib} MiB",
                   **scenario(repo, args.model, limit, args.server_arg + budget, [png] * args.burst, 0)}
            print(f"[memory] burst under a small budget: {json.dumps(row)}", flush=True)
            rows.append(row)
    doc = {"machine": info, "model": args.model, "limit_mib": args.limit_mib, "label": args.label,
           "command": " ".join(sys.argv), "rows": rows}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"results{'-' + args.label if args.label else ''}"
        (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
        lines = [f"# {args.model}: peak memory against a {args.limit_mib} MiB cgroup limit ({args.label or 'run'})", "",
                 f"CPU: {info['cpu_model']}, {info['logical_cpus']} logical CPUs", "",
                 "| input | requests | asked | answers (tiles, seconds) | most admitted at once | server peak RSS "
                 "| survived | OOM kills |", "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            answers = ", ".join(str(r.get("status")) + (f" ({r['tiles']} tiles, {r['wall_s']} s)" if r.get("tiles")
                                                        else "") for r in row["replies"])
            lines.append(f"| {row['size']}² | {row['requests']} | {row['asked']} | {answers} | "
                         f"{row['admitted_peak_mib']:,.0f} MiB | {row['peak_rss_mib']:,.0f} MiB | "
                         f"{'yes' if row['survived'] else 'no'} | {row['oom_kills']} |")
        (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
