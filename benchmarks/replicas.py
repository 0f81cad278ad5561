"""How throughput scales with replicas behind HAProxy, and what one replica needs per model.

    make demo    # writes model-repository/
    .venv/bin/python -m ganserve.benchmarks.replicas --repo model-repository --model pix2pix --size 64 \\
        --out benchmarks/results/replicas/<name>

Two parts, one after the other, nothing else on the cores:

* scaling: KServe v2 ModelInfer from tritonclient.grpc.aio (closed loop, each concurrency for --duration seconds)
  against (a) one replica directly, (b) the same replica through HAProxy (deploy/haproxy/haproxy.cfg as it is, both
  server lines on it), (c) two replicas through HAProxy, each with half the threads. The client and the balancer
  share the machine's cores with the replicas, which a real deployment would not: the figures say what the balancer
  costs and whether splitting the cores between replicas costs or gains, not what a second machine would add.
* footprint: for each model of the repository, one replica serving only that model: load time, resident memory
  after load and its peak after --footprint-requests requests at --size, and the p50 of one client.

Prints the CPU, writes replicas.json and replicas.md to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganserve.benchmarks.bench import _feeds, model_sizes
from ganserve.benchmarks.loadgen import ProcessMonitor, Stats, closed_loop, summarise
from ganserve.core.contract import ModelCard
from ganserve.core.machine import cpu_info, describe
from ganserve.serving.server import Child, start_subprocess

CONFIG = Path("deploy/haproxy/haproxy.cfg")  # the checkout's, from its root (--haproxy-config elsewhere)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if found is None:
        raise SystemExit("benchmarks.replicas: haproxy is not installed (apt-get install haproxy)")
    return found


@dataclass
class Balancer:
    proc: subprocess.Popen
    port: int

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_balancer(backends: list[int], config: Path = CONFIG) -> Balancer:
    """HAProxy on `config` (deploy/haproxy/haproxy.cfg); with one backend, both of its server lines point at it."""
    port = _free_port()
    first, second = (backends * 2)[:2]
    env = {**os.environ, "GANSERVE_LB_BIND": f"127.0.0.1:{port}", "GANSERVE_REPLICA_1": f"127.0.0.1:{first}",
           "GANSERVE_REPLICA_2": f"127.0.0.1:{second}"}
    proc = subprocess.Popen([_haproxy_binary(), "-db", "-f", str(config)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    balancer = Balancer(proc, port)
    _wait_ready(f"127.0.0.1:{port}", 20.0)
    return balancer


def _wait_ready(target: str, seconds: float) -> None:
    import tritonclient.grpc as tg

    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        try:
            if tg.InferenceServerClient(target).is_server_ready(client_timeout=1):
                return
        except Exception:  # noqa: BLE001  (not up yet)
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{target} did not become ready in {seconds:.0f} s")


def _replica(repo: Path, threads: int, *extra: str) -> Child:
    return start_subprocess(repo, ["--http-port", "-1", "--metrics-port", "-1", "--intra-op-threads", str(threads),
                                   *extra], timeout=600)


def _stop(child: Child) -> None:
    child.proc.send_signal(signal.SIGTERM)
    try:
        child.proc.wait(30)
    except subprocess.TimeoutExpired:
        child.proc.kill()
        child.proc.wait()


def _one_model_repo(repo: Path, model: str, into: Path) -> Path:
    """A repository holding only `model` (a symlink to its folder), so a replica loads nothing else."""
    (into / model).symlink_to((repo / model).resolve(), target_is_directory=True)
    return into


def _inputs(card: ModelCard, size: int):
    import tritonclient.grpc.aio as tga
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, value in _feeds(card, size, 1).items():
        tensor = tga.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


async def _measure(target: str, card: ModelCard, size: int, concurrency: int, duration: float) -> tuple[list, int, float]:
    import tritonclient.grpc.aio as tga

    clients = [tga.InferenceServerClient(target) for _ in range(concurrency)]
    inputs = _inputs(card, size)
    turn = 0

    async def send():
        nonlocal turn
        client = clients[turn % len(clients)]  # one HTTP/2 connection per in-flight request: the balancer spreads
        turn += 1                              # connections' streams per request, the replicas see them all
        reply = await client.infer(card.name, inputs, client_timeout=60)
        return reply

    try:
        return await closed_loop(send, concurrency, duration=duration, warmup=2)
    finally:
        for client in clients:
            await client.close()


def _row(setup: str, target: str, pids: list[int], card: ModelCard, size: int, concurrency: int,
         duration: float) -> Stats:
    monitor = ProcessMonitor(pids)
    monitor.start()
    latencies, errors, wall = asyncio.run(_measure(target, card, size, concurrency, duration))
    cpu, rss = monitor.stop()
    stats = summarise(setup, size, 1, concurrency, latencies, errors, wall, cpu, rss)
    print(f"  {setup:<28} c={concurrency:<3} {stats.throughput_rps:8.1f} req/s  p50 {stats.p50_ms:7.2f} ms  "
          f"p99 {stats.p99_ms:7.2f} ms  errors {errors}  cpu {cpu:5.0f}%", flush=True)
    return stats


def scaling(repo: Path, model: str, size: int, concurrencies: list[int], duration: float,
            config: Path = CONFIG) -> list[Stats]:
    card = ModelCard.load(repo / model / "model_card.json")
    cores = os.cpu_count() or 1
    rows: list[Stats] = []
    with tempfile.TemporaryDirectory() as tmp:
        only = _one_model_repo(repo, model, Path(tmp))
        print(f"scaling: {model} at {size}x{size}, {cores} cores", flush=True)
        replica = _replica(only, cores)
        try:
            for c in concurrencies:
                rows.append(_row(f"1 replica, {cores} threads, direct", f"127.0.0.1:{replica.port}",
                                 [replica.proc.pid], card, size, c, duration))
            balancer = start_balancer([replica.port], config)
            try:
                for c in concurrencies:
                    rows.append(_row(f"1 replica, {cores} threads, haproxy", f"127.0.0.1:{balancer.port}",
                                     [replica.proc.pid, balancer.proc.pid], card, size, c, duration))
            finally:
                balancer.stop()
        finally:
            _stop(replica)
        half = max(1, cores // 2)
        replicas = [_replica(only, half) for _ in range(2)]
        try:
            balancer = start_balancer([r.port for r in replicas], config)
            try:
                for c in concurrencies:
                    rows.append(_row(f"2 replicas, {half} thread{'s' * (half > 1)} each, haproxy",
                                     f"127.0.0.1:{balancer.port}",
                                     [r.proc.pid for r in replicas] + [balancer.proc.pid], card, size, c, duration))
            finally:
                balancer.stop()
        finally:
            for r in replicas:
                _stop(r)
    return rows


def _vm(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def footprint(repo: Path, size: int, requests: int) -> list[dict]:
    print(f"footprint: one replica per model, {requests} requests at {size}x{size}", flush=True)
    out = []
    for folder in sorted(p for p in repo.iterdir() if (p / "model_card.json").is_file()):
        card = ModelCard.load(folder / "model_card.json")
        side = model_sizes(card, [size])[0]
        with tempfile.TemporaryDirectory() as tmp:
            only = _one_model_repo(repo, folder.name, Path(tmp))
            t0 = time.perf_counter()  # cold: every provider/precision candidate timed and checked, as on a new node
            _stop(_replica(only, os.cpu_count() or 1, "--no-cache"))
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()  # warm: the choice cache of an earlier start on this machine
            replica = _replica(only, os.cpu_count() or 1)
            load_s = time.perf_counter() - t0
            try:
                after_load = _vm(replica.proc.pid, "VmRSS")
                latencies, errors, wall = asyncio.run(_count_measure(replica.port, card, side, requests))
                peak = _vm(replica.proc.pid, "VmHWM")
            finally:
                _stop(replica)
        p50 = float(np.percentile(np.asarray(latencies) * 1e3, 50)) if latencies else float("nan")
        row = {"model": folder.name, "task": card.task, "parameters": card.parameters, "size": side,
               "cold_load_s": round(cold_s, 2),
               "onnx_mb": round(sum(f.stat().st_size for f in folder.rglob("*.onnx")) / 2**20, 2),
               "load_s": round(load_s, 2), "rss_after_load_mb": round(after_load, 1), "peak_rss_mb": round(peak, 1),
               "requests": len(latencies), "errors": errors, "p50_ms": round(p50, 2),
               "throughput_rps_1_client": round(len(latencies) / wall, 1) if wall else None}
        print(f"  {row['model']:<12} {side:>3}x{side:<3} cold load {cold_s:5.1f} s  warm load {row['load_s']:5.1f} s  rss {row['rss_after_load_mb']:6.0f} MB  "
              f"peak {row['peak_rss_mb']:6.0f} MB  p50 {row['p50_ms']:7.2f} ms  errors {errors}", flush=True)
        out.append(row)
    models = [r["model"] for r in out]
    t0 = time.perf_counter()  # every model at once, as a replica of the whole repository serves them
    replica = _replica(repo, os.cpu_count() or 1)
    try:
        row = {"model": f"all {len(models)} models", "task": "", "parameters": sum(r["parameters"] or 0 for r in out),
               "size": "", "onnx_mb": round(sum(r["onnx_mb"] for r in out), 2), "cold_load_s": "",
               "load_s": round(time.perf_counter() - t0, 2), "rss_after_load_mb": round(_vm(replica.proc.pid, "VmRSS"), 1),
               "peak_rss_mb": round(_vm(replica.proc.pid, "VmHWM"), 1), "requests": 0, "errors": 0, "p50_ms": "",
               "throughput_rps_1_client": ""}
    finally:
        _stop(replica)
    print(f"  {row['model']:<12} warm load {row['load_s']:5.1f} s  rss {row['rss_after_load_mb']:6.0f} MB", flush=True)
    out.append(row)
    return out


async def _count_measure(port: int, card: ModelCard, size: int, requests: int):
    import tritonclient.grpc.aio as tga

    client = tga.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = _inputs(card, size)
    try:
        return await closed_loop(lambda: client.infer(card.name, inputs, client_timeout=120), 1,
                                 requests=requests, warmup=1)
    finally:
        await client.close()


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [f"# Replicas behind HAProxy: {doc['model']} at {doc['size']}x{doc['size']}", "",
             f"CPU: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({', '.join(m['isa'])}); "
             f"{doc['duration_s']:.0f} s per row; client, HAProxy and replicas on the same cores; nothing else ran.",
             "", "| setup | concurrency | req/s | p50 ms | p99 ms | errors | CPU % (servers + balancer) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["scaling"]:
        lines.append(f"| {r['path']} | {r['concurrency']} | {r['throughput_rps']:.1f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['errors']} | {r['cpu_percent']:.0f} |")
    lines += ["", f"## One replica per model ({doc['footprint_requests']} requests at {doc['size']}x{doc['size']} or "
              "the model's fixed size, one client)", "",
              "Cold load: --no-cache, every provider/precision candidate timed and checked against the reference set "
              "(a new node); warm load: the choice cache of an earlier start (a restarted pod with its cache "
              "volume).", "",
              "| model | task | parameters | size | ONNX MB | cold load s | warm load s | RSS after load MB | "
              "peak RSS MB | p50 ms | req/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["footprint"]:
        lines.append(f"| {r['model']} | {r['task']} | {r['parameters'] or ''} | {r['size']} | {r['onnx_mb']} | "
                     f"{r['cold_load_s']} | {r['load_s']} | "
                     f"{r['rss_after_load_mb']} | {r['peak_rss_mb']} | {r['p50_ms']} | {r['throughput_rps_1_client']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=Path("model-repository"))
    p.add_argument("--model", default="pix2pix")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--concurrency", default="1,4,8", help="comma-separated (default 1,4,8)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per scaling row (default 5)")
    p.add_argument("--footprint-requests", type=int, default=20)
    p.add_argument("--skip-footprint", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/replicas/latest"))
    p.add_argument("--haproxy-config", type=Path, default=CONFIG,
                   help=f"the balancer's configuration (default: {CONFIG}, from the checkout's root)")
    args = p.parse_args(argv)
    if not (args.repo / args.model / "model_card.json").is_file():
        p.error(f"{args.repo / args.model} is not an exported model folder: run `make demo` first")
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        p.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not args.haproxy_config.is_file():
        p.error(f"--haproxy-config {args.haproxy_config}: no such file (run from the checkout's root, or name it)")
    if min(concurrencies) < 1 or args.duration <= 0 or args.size < 1 or args.footprint_requests < 1:
        p.error("--concurrency, --duration, --size and --footprint-requests must be positive")
    print(f"CPU: {describe()}", flush=True)
    doc = {"machine": cpu_info(), "model": args.model, "size": args.size, "duration_s": args.duration,
           "footprint_requests": args.footprint_requests,
           "scaling": [s.to_dict() for s in scaling(args.repo, args.model, args.size, concurrencies, args.duration,
                                                          args.haproxy_config)],
           "footprint": [] if args.skip_footprint else footprint(args.repo, args.size, args.footprint_requests)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replicas.json").write_text(json.dumps(doc, indent=1))
    (args.out / "replicas.md").write_text(markdown(doc))
    print(f"wrote {args.out}/replicas.json and replicas.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
