"""In-process paths of `ganserve bench` for issue 14: every provider/precision candidate the server could pick (with
its reference-set quality), native OpenVINO, latency vs throughput mode (streams), and the image codecs."""

from __future__ import annotations

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ganserve.core.errors import described
from ganserve.benchmarks.loadgen import closed_loop, summarise, timed_loop, Stats
from ganserve.core.contract import REFERENCE_FILE, ModelCard


@dataclass
class CandidateRun:
    """One candidate built in this process: its label, a run callable factory and the reference-set verdict."""

    label: str
    provider: str
    precision: str
    make: Callable[[int], Any]  # threads -> runner with .run(feeds)
    runner: Any
    quality: str
    passed: bool


def candidate_runs(version_dir: Path, card: ModelCard, threads: int,
                   providers: list[str] | None = None) -> tuple[list[CandidateRun], list[str]]:
    """Every candidate the server would consider on this machine (default providers unless given), built and
    checked; plus why others are absent."""
    import onnxruntime as ort

    from ganserve.core.machine import cpu_info
    from ganserve.serving.candidates import check_quality, list_candidates, load_reference_cases, version_files
    from ganserve.serving.runtime import OrtRunner, RuntimeSettings, requested_providers

    files = version_files(version_dir, card.precision)
    cands, skipped = list_candidates(files, requested_providers(providers), ort.get_available_providers(),
                                     bool(cpu_info()["bf16_hardware"]))
    cases = load_reference_cases(version_dir / REFERENCE_FILE if (version_dir / REFERENCE_FILE).exists() else None)
    runs, notes = [], [f"ORT {t.provider}/{t.precision}: {t.reason}" for t in skipped]
    for c in cands:
        def make(n: int, c=c) -> Any:
            return OrtRunner(c.path, RuntimeSettings(intra_op_threads=n), c)
        try:
            runner = make(threads)
            outs = [runner.run(case.inputs) for case in cases]
        except Exception as exc:  # a provider that cannot run this graph is reported, not fatal
            notes.append(f"ORT {c.label}: failed to run ({described(exc, 120)})")
            continue
        ok, text = check_quality(card, cases, outs, c.precision) if cases else (True, "no reference set")
        runs.append(CandidateRun(f"ort-{c.label.replace('/', '-').lower()}", c.provider, c.precision, make, runner, text, ok))
    return runs, notes


def time_candidates(runs: list[CandidateRun], inputs: Callable[[int, int], dict[str, np.ndarray]], sizes: list[int],
                    batches: list[int], amount: dict[str, Any], add: Callable[[Stats], None]) -> None:
    """One timed row per candidate, size and batch (first call per shape excluded: OpenVINO compiles per shape)."""
    for run in runs:
        for size in sizes:
            for batch in batches:
                feeds = inputs(size, batch)
                lat, wall = timed_loop(lambda: run.runner.run(feeds), **amount, warmup=1)
                stats = summarise(run.label, size, batch, 1, lat, 0, wall)
                stats.extra.update(quality=run.quality, passed=run.passed)
                add(stats)


def openvino_native(onnx_path: Path, bf16: bool, threads: int) -> tuple[list[tuple[str, Callable]], str | None]:
    """(label, compile(shape) -> infer callable) for native OpenVINO fp32 (and bf16 with hardware), or why not."""
    try:
        import openvino as ov
    except ImportError:
        return [], "native OpenVINO: the `openvino` package is not installed in this environment"
    core = ov.Core()
    hints = [("openvino-native-fp32", "f32")] + ([("openvino-native-bf16", "bf16")] if bf16 else [])

    def compiler(hint: str) -> Callable:
        def compile_for(feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
            model = core.read_model(str(onnx_path))
            model.reshape({k: list(v.shape) for k, v in feeds.items()})
            compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                                                         "INFERENCE_NUM_THREADS": threads})
            request = compiled.create_infer_request()
            return lambda: request.infer(feeds)
        return compile_for
    return [(label, compiler(hint)) for label, hint in hints], None


def time_native(paths: list[tuple[str, Callable]], inputs: Callable[[int, int], dict[str, np.ndarray]],
                sizes: list[int], batches: list[int], amount: dict[str, Any], add: Callable[[Stats], None]) -> None:
    for label, compile_for in paths:
        for size in sizes:
            for batch in batches:
                fn = compile_for(inputs(size, batch))
                lat, wall = timed_loop(fn, **amount, warmup=1)
                add(summarise(label, size, batch, 1, lat, 0, wall))


def time_modes(run: CandidateRun, feeds: dict[str, np.ndarray], size: int, cores: int, concurrency: list[int],
               amount: dict[str, Any], add: Callable[[Stats], None]) -> None:
    """Latency mode (one session using every core) vs throughput mode (one single-thread session per core, as many
    runs in flight), each at the given concurrencies with requests of one image."""
    modes = [("latency", 1, cores)] + ([("throughput", cores, 1)] if cores > 1 else [])
    for mode, streams, threads in modes:
        sessions = [run.make(threads) for _ in range(streams)]
        for s in sessions:
            s.run(feeds)
        for conc in concurrency:
            pool = ThreadPoolExecutor(max_workers=conc)

            async def go() -> tuple[list[float], int, float]:
                locks = [asyncio.Lock() for _ in sessions]  # FIFO: a freed session goes to the longest waiter
                turn = iter(range(1 << 30))
                loop = asyncio.get_running_loop()

                async def send() -> None:
                    i = next(turn) % len(sessions)
                    async with locks[i]:
                        await loop.run_in_executor(pool, sessions[i].run, feeds)
                return await closed_loop(send, conc, **amount, warmup=1)
            try:
                lat, errors, wall = asyncio.run(go())
            finally:
                pool.shutdown()
            stats = summarise(f"{run.label}-{mode}", size, 1, conc, lat, errors, wall)
            stats.extra.update(streams=streams, threads_per_stream=threads)
            add(stats)


def codec_table(image: np.ndarray, repeats: int = 5) -> list[dict[str, Any]]:
    """Encode one HxWx3 uint8 output with each codec setting: median ms, bytes, and decode ms of the result."""
    settings = [("PNG", {"compress_level": level}, f"PNG level {level}") for level in (0, 1, 6, 9)]
    settings += [("JPEG", {"quality": 90}, "JPEG q90"), ("WEBP", {"quality": 90, "method": 0}, "WebP q90 (method 0)"),
                 ("WEBP", {"lossless": True, "quality": 0, "method": 0}, "WebP lossless (method 0)")]
    img = Image.fromarray(image)
    rows = []
    for fmt, kw, label in settings:
        enc, dec = [], []
        data = b""
        for _ in range(repeats):
            buf = io.BytesIO()
            t0 = time.perf_counter()
            img.save(buf, format=fmt, **kw)
            enc.append(time.perf_counter() - t0)
            data = buf.getvalue()
            t0 = time.perf_counter()
            Image.open(io.BytesIO(data)).convert("RGB").load()
            dec.append(time.perf_counter() - t0)
        rows.append({"codec": label, "encode_ms": 1e3 * float(np.median(enc)), "decode_ms": 1e3 * float(np.median(dec)),
                     "bytes": len(data), "lossless": fmt == "PNG" or bool(kw.get("lossless"))})
    return rows
