"""Does a large KServe v2 JSON body stall the event loop? Health-check latency while the server parses the largest
JSON body it takes, with the JSON work on the loop (before), in a thread, and in the worker process (serving now).

    .venv/bin/python -m ganserve.benchmarks.json_loop [--seconds 10] [--idle-seconds 3] [--max-json-mb 8]
        [--modes loop,thread,process] [--out benchmarks/results/json_loop]

Builds a one-model repository ("echo": y = x, FP32 [N, 3, H, W], so the JSON answer is as large as the request).
For each mode it starts `ganserve serve` in a subprocess with serving.rest.JsonWork.mode set, then probes
GET /v2/health/ready (keep-alive) and gRPC ServerReady, one of each every 10 ms: first idle, then while a client in
another process sends back-to-back JSON infer requests of exactly --max-json-mb (JSON answers). A second, in-process
part times the JSON work alone at a few sizes on the loop and through the worker's round trip: the reason small
bodies stay on the loop. Prints the CPU first; writes json_loop.json and json_loop.md to --out. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import onnx
from onnx import TensorProto, helper

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, ModelCard, TensorSpec, triton_config
from ganserve.core.machine import cpu_info, describe
from ganserve.serving.limits import Limits
from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.rest import ENCODE_COST_BYTES, INLINE_BYTES, JsonWork, encode_header, parse_header
from ganserve.serving.server import ServerConfig, serve

MODES = ("loop", "thread", "process")
READY = re.compile(r"ganserve serving: ready grpc=\S+:(\d+) http=(-?\d+)")
PROBE_INTERVAL_S = 0.01


# -- the repository and the body -----------------------------------------------------------------------------------
def write_repo(root: Path) -> Path:
    """A repository with one model, "echo" (Identity over FP32 [N, 3, H, W])."""
    card = ModelCard(name="echo", task="echo", architecture="identity", inputs=[TensorSpec("x", [3, -1, -1])],
                     outputs=[TensorSpec("y", [3, -1, -1])])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "echo",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = root / "repo" / "echo"
    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / MODEL_FILE))
    (folder / CARD_FILE).write_text(card.to_json())
    (folder / CONFIG_FILE).write_text(triton_config(card))
    return root / "repo"


def json_body(size: int, seed: int = 0) -> tuple[bytes, list[int]]:
    """A valid JSON infer body for echo of exactly `size` bytes: the largest square image of random FP32 values
    (written as tritonclient writes them, ~20 characters each) that fits, its "id" padding the rest."""
    side = int((size / (3 * 18)) ** 0.5) + 1
    values = np.random.default_rng(seed).uniform(-1, 1, 3 * side * side).astype(np.float32)

    def body(side: int, pad: int = 0) -> bytes:
        return json.dumps({"id": " " * pad, "inputs": [{"name": "x", "shape": [1, 3, side, side], "datatype": "FP32",
                                                        "data": values[:3 * side * side].tolist()}]}).encode()

    while len(bare := body(side)) > size:
        side -= 1
    return body(side, size - len(bare)), [1, 3, side, side]


# -- the server ---------------------------------------------------------------------------------------------------
def serve_child(mode: str, repo: Path, max_json_mb: float) -> int:
    """Run `ganserve serve` here with the JSON work in `mode` (the subprocess side of `start_server`)."""
    JsonWork.mode = mode
    config = ServerConfig(repo=repo, port=0, http_port=0, metrics_port=-1, grace_seconds=2)
    config.runtime.intra_op_threads = 1
    config.limits = Limits(max_json_mb=max_json_mb)
    return serve(config)


def start_server(mode: str, repo: Path, max_json_mb: float, cache: Path) -> tuple[subprocess.Popen, int, int]:
    """A server subprocess for `mode`, and its gRPC and HTTP ports once it says it is ready."""
    cmd = [sys.executable, "-m", "ganserve.benchmarks.json_loop", "--serve", mode, "--repo", str(repo),
           "--max-json-mb", str(max_json_mb)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GANSERVE_CACHE_DIR": str(cache)})
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        match = READY.search(line)
        if match:
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return proc, int(match.group(1)), int(match.group(2))
    proc.wait()
    raise RuntimeError("the server did not start:\n" + "".join(seen[-30:]))


def _drain(stream) -> None:
    """Keep reading the server's output so it never blocks on a full pipe."""
    for _ in stream:
        pass


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- load and probes --------------------------------------------------------------------------------------------
def load_child(port: int, body: bytes, started: mp.Event, stop: mp.Event, answer: mp.Queue) -> None:
    """Back-to-back JSON infer requests on one keep-alive connection until `stop`; puts the latencies (s)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times, bad = [], []
    started.set()
    while not stop.is_set():
        start = time.perf_counter()
        conn.request("POST", "/v2/models/echo/infer", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read()
        times.append(time.perf_counter() - start)
        if reply.status != 200:
            bad.append(f"{reply.status} {data[:200]!r}")
    conn.close()
    answer.put((times, bad))


def probe(http_port: int, grpc_port: int, seconds: float) -> dict[str, list[float]]:
    """Latencies (s) of GET /v2/health/ready and gRPC ServerReady, one of each every PROBE_INTERVAL_S."""
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady",
                                request_serializer=pb.ServerReadyRequest.SerializeToString,
                                response_deserializer=pb.ServerReadyResponse.FromString)
    found: dict[str, list[float]] = {"http": [], "grpc": []}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        conn.request("GET", "/v2/health/ready")
        reply = conn.getresponse()
        reply.read()
        found["http"].append(time.perf_counter() - start)
        start = time.perf_counter()
        assert ready(pb.ServerReadyRequest(), timeout=60).ready
        found["grpc"].append(time.perf_counter() - start)
        time.sleep(PROBE_INTERVAL_S)
    conn.close()
    channel.close()
    return found


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in seconds)
    return {"n": len(ms), "p50_ms": statistics.median(ms), "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "max_ms": ms[-1]}


def run_mode(mode: str, repo: Path, body: bytes, args: argparse.Namespace, cache: Path) -> dict:
    """Idle probes, then probes under the large-JSON load, on a fresh server for `mode`."""
    proc, grpc_port, http_port = start_server(mode, repo, args.max_json_mb, cache)
    try:
        probe(http_port, grpc_port, 0.5)  # warm up both connections
        idle = probe(http_port, grpc_port, args.idle_seconds)
        context = mp.get_context("spawn")
        started, stop, answer = context.Event(), context.Event(), context.Queue()
        loader = context.Process(target=load_child, args=(http_port, body, started, stop, answer))
        loader.start()
        started.wait(60)
        busy = probe(http_port, grpc_port, args.seconds)
        stop.set()
        times, bad = answer.get(timeout=300)
        loader.join()
    finally:
        stop_server(proc)
    if bad:
        raise RuntimeError(f"{mode}: {len(bad)} large requests failed, first: {bad[0]}")
    return {"mode": mode, "idle": {k: summary(v) for k, v in idle.items()},
            "loaded": {k: summary(v) for k, v in busy.items()},
            "large_requests": {"n": len(times), "first_s": times[0] if times else None,
                               "p50_s": statistics.median(times) if times else None}}


# -- the JSON work alone, on the loop or through the worker -------------------------------------------------------
def threshold(sizes_kib: list[int]) -> list[dict]:
    """Per body size: the parse and the answer's encoding on the calling thread (what the loop would be blocked
    for), and the same work through the worker process (a request's added latency, the loop free meanwhile)."""
    async def through_worker(work: JsonWork, header: bytes, data: dict) -> tuple[float, float]:
        start = time.perf_counter()
        parsed = await work.run(len(header), parse_header, "echo", "", header, 0)
        middle = time.perf_counter()
        await work.run(len(header), encode_header, {"outputs": [{"name": "y"}]}, data)
        del parsed
        return middle - start, time.perf_counter() - middle

    async def measure() -> list[dict]:
        work = JsonWork(inline_bytes=0)
        rows = []
        try:
            for kib in sizes_kib:
                body, shape = json_body(kib * 1024, seed=kib)
                data = {0: np.asarray(json.loads(body)["inputs"][0]["data"], np.float32).reshape(shape)}
                await through_worker(work, body, data)  # the first call starts the worker
                inline_parse, inline_encode, worker_parse, worker_encode = [], [], [], []
                for _ in range(max(3, min(50, 4096 // kib))):
                    start = time.perf_counter()
                    parse_header("echo", "", body, 0)
                    middle = time.perf_counter()
                    encode_header({"outputs": [{"name": "y"}]}, data)
                    inline_parse.append(middle - start)
                    inline_encode.append(time.perf_counter() - middle)
                    parse_s, encode_s = await through_worker(work, body, data)
                    worker_parse.append(parse_s)
                    worker_encode.append(encode_s)
                rows.append({"kib": kib, "values": int(data[0].size),
                             "loop_parse_ms": statistics.median(inline_parse) * 1e3,
                             "loop_encode_ms": statistics.median(inline_encode) * 1e3,
                             "worker_parse_ms": statistics.median(worker_parse) * 1e3,
                             "worker_encode_ms": statistics.median(worker_encode) * 1e3})
        finally:
            await work.close()
        return rows

    return asyncio.run(measure())


# -- report ----------------------------------------------------------------------------------------------------------
def markdown(doc: dict) -> str:
    lines = [f"# JSON work and the event loop ({doc['date']})", "",
             f"CPU: {doc['cpu']}; Python {doc['python']}; load average at the start {doc['load_average']:.2f}", "",
             f"Command: `{doc['command']}`", "",
             f"Large body: {doc['body_bytes']:,} bytes of JSON (--max-json-mb {doc['max_json_mb']:g}), shape "
             f"{doc['shape']}, JSON answer of the same size; one probe of each kind every "
             f"{PROBE_INTERVAL_S * 1e3:.0f} ms plus its own latency (fewer than 100 probes: p99 is the max).", "",
             "| JSON work | phase | probes | HTTP ready p50 | p99 | max | gRPC ServerReady p50 | p99 | max | "
             "large requests (first, p50) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in doc["modes"]:
        for phase in ("idle", "loaded"):
            h, g = row[phase]["http"], row[phase]["grpc"]
            large = row["large_requests"]
            extra = (f"{large['n']} ({large['first_s']:.2f} s, {large['p50_s']:.2f} s)" if phase == "loaded"
                     and large["n"] else "")
            lines.append(f"| {row['mode']} | {phase} | {h['n']} | {h['p50_ms']:.2f} ms | {h['p99_ms']:.1f} ms | "
                         f"{h['max_ms']:.1f} ms | {g['p50_ms']:.2f} ms | {g['p99_ms']:.1f} ms | {g['max_ms']:.1f} ms | "
                         f"{extra} |")
    if doc["threshold"]:
        lines += ["", f"The JSON work alone (in-process, medians): on the loop it blocks the loop that long; through "
                  f"the worker the loop is free and the request waits that long. The server parses bodies under "
                  f"{INLINE_BYTES // 1024} KiB and writes answers under {INLINE_BYTES // ENCODE_COST_BYTES:,} values "
                  "on the loop.", "",
                  "| body | values | loop: parse | loop: encode answer | worker: parse | worker: encode answer |",
                  "|---|---|---|---|---|---|"]
        for row in doc["threshold"]:
            lines.append(f"| {row['kib']} KiB | {row['values']:,} | {row['loop_parse_ms']:.2f} ms | "
                         f"{row['loop_encode_ms']:.2f} ms | {row['worker_parse_ms']:.2f} ms | "
                         f"{row['worker_encode_ms']:.2f} ms |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="probing under load, per mode")
    p.add_argument("--idle-seconds", type=float, default=3.0)
    p.add_argument("--max-json-mb", type=float, default=8.0, help="the server's cap, and the body's size")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--sizes-kib", default="4,16,64,256,1024", help="body sizes of the in-process part ('' = skip)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/json_loop"))
    p.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve:
        return serve_child(args.serve, args.repo, args.max_json_mb)
    print(f"CPU: {describe()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": describe(), "machine": cpu_info(),
           "python": platform.python_version(), "numpy": np.__version__, "load_average": os.getloadavg()[0],
           "command": " ".join(["python -m ganserve.benchmarks.json_loop", *(sys.argv[1:] if argv is None else argv)]),
           "max_json_mb": args.max_json_mb, "modes": [], "threshold": []}
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_repo(Path(tmp))
        body, shape = json_body(int(args.max_json_mb * 1024 * 1024))
        doc["body_bytes"], doc["shape"] = len(body), shape
        print(f"large body: {len(body):,} bytes of JSON, shape {shape}", flush=True)
        for mode in args.modes.split(","):
            row = run_mode(mode, repo, body, args, Path(tmp) / "cache")
            doc["modes"].append(row)
            h, g = row["loaded"]["http"], row["loaded"]["grpc"]
            print(f"{mode:8s} idle HTTP p50 {row['idle']['http']['p50_ms']:.2f} ms | loaded HTTP p50/p99/max "
                  f"{h['p50_ms']:.2f}/{h['p99_ms']:.1f}/{h['max_ms']:.1f} ms, gRPC {g['p50_ms']:.2f}/{g['p99_ms']:.1f}/"
                  f"{g['max_ms']:.1f} ms; {row['large_requests']['n']} large requests", flush=True)
    if args.sizes_kib:
        doc["threshold"] = threshold([int(k) for k in args.sizes_kib.split(",")])
    text = markdown(doc)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "json_loop.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "json_loop.md").write_text(text)
    print(f"wrote {args.out / 'json_loop.md'} and json_loop.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
