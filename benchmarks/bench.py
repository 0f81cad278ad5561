"""`ganserve bench`: one model, one machine, one run — torch eager, in-process ORT, the served paths, peer servers.

Every figure comes from the load drivers in benchmarks.loadgen; ratios are computed from rows of the same run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

import grpc
import numpy as np
from PIL import Image
from tqdm import tqdm

from ganserve.benchmarks import report
from ganserve.benchmarks.flops import count_flops
from ganserve.benchmarks.loadgen import ProcessMonitor, Stats, closed_loop, summarise, timed_loop
from ganserve.benchmarks.peaks import bf16_peak_gflops, cpu_info, int8_peak_gops, matmul_peak_gflops
from ganserve.core.card_roles import rpc_for
from ganserve.core.contract import CARD_FILE, MODEL_FILE, REFERENCE_FILE, ModelCard, model_versions
from ganserve.core.errors import GanserveError, described
from ganserve.core.image_metrics import to_uint8

log = logging.getLogger("ganserve.bench")

# Peer servers on the same TorchScript network, each in its own venv: TorchServe unbatched and with its own batching
# (batch_size 8, max_batch_delay 5 ms), LitServe with its own batching (max_batch_size 8, batch_timeout 5 ms).
PEER_PATHS = ("peer-torchserve", "peer-torchserve-batch8", "peer-litserve")
SERVED_PATHS = ("oip-raw", "grpc-floor", "image-api", "tritonclient-aio", "http-raw", "http-image", *PEER_PATHS)
# Paths that talk to the ganserve server (started once per run): gRPC, and KServe v2 REST / the image API over HTTP.
SERVER_PATHS = ("oip-raw", "image-api", "tritonclient-aio", "http-raw", "http-image")
FAST_CPU_PATHS = ("ort-candidates", "openvino-native", "modes", "codecs")


@dataclass
class BenchConfig:
    repo: Path
    model: str
    sizes: list[int] = field(default_factory=lambda: [64, 128, 256])
    batches: list[int] = field(default_factory=lambda: [1, 4])
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    duration: float | None = 3.0  # seconds per configuration (after warm-up)
    requests: int | None = None  # or a fixed number of requests per configuration
    out: Path | None = None
    checkpoint: Path | None = None  # for torch eager and the peer; default: the card's source checkpoint
    paths: list[str] = field(default_factory=lambda: ["torch", "ort", *FAST_CPU_PATHS, *SERVED_PATHS])
    server_args: list[str] = field(default_factory=list)
    command: str = ""
    server_target: str | None = None  # a running server to measure (run_bench_models starts one for all models)
    http_target: str | None = None  # its HTTP host:port, for the http-* paths
    server_pids: list[int] = field(default_factory=list)  # its process, for CPU and memory figures
    machine: dict[str, Any] | None = None  # CPU facts and peaks measured once for a multi-model run


def image_models(repo: Path) -> list[str]:
    """Models of a repository that Transform serves (what `--model all` benches), by name."""
    names = []
    for folder in sorted(p for p in repo.iterdir() if (p / CARD_FILE).is_file()):
        card = ModelCard.load(folder / CARD_FILE)
        if rpc_for(card) == "Transform" and model_versions(folder):
            names.append(folder.name)
    return names


def model_sizes(card: ModelCard, sizes: list[int]) -> list[int]:
    """The square input sizes to bench a model at: its fixed size if it has one, else each size rounded up to the
    spatial multiple it needs."""
    spec = card.input_by_role("image") or card.inputs[0]
    if len(spec.shape) == 3 and spec.shape[1] > 0:
        return [spec.shape[1]]
    m = max(1, card.spatial_multiple)
    return sorted({-(-s // m) * m for s in sizes})


def _image_input(card: ModelCard, size: int, batch: int) -> np.ndarray:
    """A deterministic natural-looking input (smooth noise) in the model's value range, NCHW float32."""
    spec = card.input_by_role("image") or card.inputs[0]
    lo, hi = spec.value_range or [0.0, 1.0]
    rng = np.random.default_rng(size * 31 + batch)
    coarse = rng.random((batch, spec.shape[0], max(2, size // 8), max(2, size // 8)), dtype=np.float32)
    x = np.stack([np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC)) for c in b]) for b in coarse])
    return (lo + (hi - lo) * np.clip(x, 0, 1)).astype(np.float32)


def _feeds(card: ModelCard, size: int, batch: int) -> dict[str, np.ndarray]:
    """Every input of the model for a `size`² image: the image itself, conditions one-hot (row i gets choice i),
    other tensors deterministic noise; dynamic axes take `size`."""
    rng = np.random.default_rng(size * 7 + batch)
    feeds = {}
    for spec in card.inputs:
        if spec.role == "image":
            feeds[spec.name] = _image_input(card, size, batch)
        elif spec.role == "condition" and len(spec.shape) == 1 and spec.shape[0] > 0:
            feeds[spec.name] = np.eye(spec.shape[0], dtype=np.float32)[np.arange(batch) % spec.shape[0]]
        else:
            shape = [batch] + [d if d > 0 else size for d in spec.shape]
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.numpy_dtype)
    return feeds


def _png_of(x: np.ndarray, card: ModelCard) -> bytes:
    spec = card.input_by_role("image") or card.inputs[0]
    lo, hi = spec.value_range or [0.0, 1.0]
    img = to_uint8((x[0].transpose(1, 2, 0) - lo) / (hi - lo))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _split(stats: Stats, split: list[tuple[float, float, float]]) -> None:
    """Median decode / inference / encode ms of the image API's requests (the server's own Timing fields)."""
    if split:
        arr = np.median(np.asarray(split, dtype=np.float64), axis=0)
        stats.extra.update(decode_ms=float(arr[0]), infer_ms=float(arr[1]), encode_ms=float(arr[2]))


class Bench:
    def __init__(self, cfg: BenchConfig):
        self.cfg = cfg
        self.rows: list[Stats] = []
        self.skipped: list[str] = []
        self.notes: list[str] = []
        model_dir = cfg.repo / cfg.model
        versions = model_versions(model_dir)
        if not versions:
            raise GanserveError(f"{model_dir}: no exported version of model {cfg.model!r} in {cfg.repo}")
        self.onnx_path = model_dir / str(versions[-1]) / MODEL_FILE
        self.card = ModelCard.load(model_dir / CARD_FILE)
        self.output_name = (self.card.output_by_role("image") or self.card.outputs[0]).name
        cfg.sizes = model_sizes(self.card, cfg.sizes)
        self.flops = {s: count_flops(self.onnx_path, {k: list(v.shape) for k, v in _feeds(self.card, s, 1).items()})
                      for s in cfg.sizes}
        self.torch_bf16 = bool(cpu_info()["bf16_hardware"])
        total = len(cfg.sizes) * (
            ("torch" in cfg.paths) * (3 if self.torch_bf16 else 2) * len(cfg.batches)
            + ("ort" in cfg.paths) * len(cfg.batches)
            + sum(p in cfg.paths for p in ("oip-raw", "http-raw")) * len(cfg.batches) * len(cfg.concurrency)
            + sum(p in cfg.paths for p in ("image-api", "tritonclient-aio", "http-image")) * len(cfg.concurrency)
            + sum(p in cfg.paths for p in PEER_PATHS) * len(cfg.concurrency) + ("grpc-floor" in cfg.paths))
        self.bar = tqdm(total=total, desc="bench", unit="cfg", dynamic_ncols=True)

    # -- bookkeeping --------------------------------------------------------------------------------------
    def _add(self, stats: Stats) -> None:
        gflop = self.flops[stats.size] / 1e9
        stats.extra["gflops_per_s"] = gflop * stats.images_per_s
        self.rows.append(stats)
        if self.bar.n >= (self.bar.total or 0):
            self.bar.total = self.bar.n + 1
        self.bar.set_postfix_str(f"{stats.path} s{stats.size} b{stats.batch} c{stats.concurrency}: p50 {stats.p50_ms:.1f} ms")
        self.bar.update(1)

    def _amount(self) -> dict[str, Any]:
        return {"requests": self.cfg.requests, "duration": self.cfg.duration}

    # -- in-process baselines ----------------------------------------------------------------------------------
    def _torch_module(self) -> tuple[Any, str | None]:
        """(the network as a torch module, None) from the training checkpoint, or (None, why not); built once for
        torch eager and the peers."""
        if getattr(self, "torch_module", None) is not None:
            return self.torch_module, None
        ckpt = (self.cfg.checkpoint or _checkpoint_for(self.cfg, self.cfg.model)
                or Path(self.card.source.get("checkpoint_path", "") or "/nonexistent"))
        try:
            from ganserve.training.checkpoint import build_from_checkpoint
        except ImportError:
            return None, "torch is not installed (pip install 'ganserve[train]')"
        if not ckpt.is_file():
            return None, f"no checkpoint (give --checkpoint; card names {ckpt})"
        self.torch_module = build_from_checkpoint(ckpt).export_spec().module.eval()
        return self.torch_module, None

    def run_torch(self) -> None:
        module, why = self._torch_module()
        if module is None:
            self.skipped.append(f"torch eager: {why}")
            return
        import torch

        variants = [("torch-fp32", False, False), ("torch-fp32-cl", True, False)]
        if self.torch_bf16:
            variants.append(("torch-bf16-cl", True, True))
        else:
            self.skipped.append("torch bf16 autocast: this CPU has no bf16 hardware (AVX512_BF16/AMX), so it is not "
                                "a setting a user would pick here")
        torch.set_num_threads(os.cpu_count() or 1)
        for size in self.cfg.sizes:
            for batch in self.cfg.batches:
                feeds = _feeds(self.card, size, batch)
                for name, cl, use_bf16 in variants:
                    m = module.to(memory_format=torch.channels_last) if cl else module.to(memory_format=torch.contiguous_format)
                    xs = [torch.from_numpy(feeds[t.name]) for t in self.card.inputs]
                    if cl:
                        xs = [x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in xs]

                    def fn(m=m, xs=xs, use_bf16=use_bf16):
                        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                            return m(*xs)

                    lat, wall = timed_loop(fn, **self._amount(), warmup=1)
                    self._add(summarise(name, size, batch, 1, lat, 0, wall))

    def run_ort(self) -> None:
        from ganserve.serving.runtime import RuntimeSettings, choose_runner

        version_dir = self.onnx_path.parent
        choice = choose_runner(version_dir, self.card, version_dir / REFERENCE_FILE if (version_dir / REFERENCE_FILE).exists()
                               else None, RuntimeSettings())
        runner = choice.runner
        self.choice = choice
        self.notes.append(f"in-process ORT: the server's own choice at load, {choice.summary}, intra-op threads "
                          f"{RuntimeSettings().threads()}")
        for size in self.cfg.sizes:
            for batch in self.cfg.batches:
                feeds = _feeds(self.card, size, batch)
                lat, wall = timed_loop(lambda: runner.run(feeds), **self._amount(), warmup=1)
                self._add(summarise("ort-inprocess", size, batch, 1, lat, 0, wall))

    def _inputs(self, size: int, batch: int) -> dict[str, np.ndarray]:
        return _feeds(self.card, size, batch)

    def _output(self, size: int) -> np.ndarray:
        """The model's real output for the bench input (what the image API encodes), via an fp32 CPU session."""
        import onnxruntime as ort

        session = ort.InferenceSession(str(self.onnx_path), providers=["CPUExecutionProvider"])
        return session.run([self.output_name], _feeds(self.card, size, 1))[0]

    def run_fast_cpu(self) -> None:
        """Issue 14's in-process rows: every ORT candidate, native OpenVINO, latency vs throughput mode, codecs."""
        from ganserve.benchmarks import inprocess

        threads = os.cpu_count() or 1
        runs: list = []
        if "ort-candidates" in self.cfg.paths or "modes" in self.cfg.paths:
            runs, notes = inprocess.candidate_runs(self.onnx_path.parent, self.card, threads)
            self.skipped += notes
            self.candidates = [{"path": r.label, "provider": r.provider, "precision": r.precision,
                                "reference_check": r.quality, "passed": r.passed} for r in runs]
        if "ort-candidates" in self.cfg.paths:
            inprocess.time_candidates(runs, self._inputs, self.cfg.sizes, self.cfg.batches, self._amount(), self._add)
        if "openvino-native" in self.cfg.paths:
            native, why = inprocess.openvino_native(self.onnx_path, self.torch_bf16, threads)
            if why:
                self.skipped.append(why)
            inprocess.time_native(native, self._inputs, self.cfg.sizes, self.cfg.batches, self._amount(), self._add)
        if "modes" in self.cfg.paths and runs:
            passing = [r for r in runs if r.passed]
            best = min(passing or runs, key=lambda r: min(x.p50_ms for x in self.rows if x.path == r.label)
                       if any(x.path == r.label for x in self.rows) else 0.0)
            size = self.cfg.sizes[0]
            inprocess.time_modes(best, self._inputs(size, 1), size, threads, self.cfg.concurrency, self._amount(),
                                 self._add)
        if "codecs" in self.cfg.paths:
            self.codecs = {}
            for size in self.cfg.sizes:
                spec = self.card.output_by_role("image") or self.card.outputs[0]
                lo, hi = spec.value_range or [0.0, 1.0]
                y = self._output(size)
                img = to_uint8((y[0].transpose(1, 2, 0) - lo) / (hi - lo))
                self.codecs[str(size)] = inprocess.codec_table(img)
            self.notes.append("codec table: the model's own output for the bench input, encoded in this process")

    # -- served paths --------------------------------------------------------------------------------------------
    async def _sweep(self, path: str, size: int, batch: int, make_send: Callable[[int], Awaitable[Callable]],
                     monitor: ProcessMonitor, cleanup: Callable[[], None] | None = None,
                     on_row: Callable[[Stats], None] | None = None) -> None:
        for conc in self.cfg.concurrency:
            send = await make_send(conc)
            try:
                await closed_loop(send, conc, requests=conc, warmup=0)  # warm-up at this concurrency
                monitor.start()
                lat, errors, wall = await closed_loop(send, conc, **self._amount(), warmup=0)
                cpu, rss = monitor.stop()
                stats = summarise(path, size, batch, conc, lat, errors, wall, cpu, rss)
                if on_row:
                    on_row(stats)
                self._add(stats)
            finally:
                if cleanup:
                    cleanup()

    async def run_served(self) -> None:
        from ganserve.serving.server import start_subprocess

        if self.cfg.server_target:
            monitor = ProcessMonitor(self.cfg.server_pids)
            await self._served_paths(self.cfg.server_target, monitor)
            await self._http_paths(self.cfg.http_target, monitor)
            return
        proc, port, _, http_port = start_subprocess(self.cfg.repo, self.cfg.server_args)
        monitor = ProcessMonitor([proc.pid])
        try:
            await self._served_paths(f"127.0.0.1:{port}", monitor)
            await self._http_paths(f"127.0.0.1:{http_port}" if http_port > 0 else None, monitor)
        finally:
            self.server_peak_rss_mb = monitor.peak_rss_mb()
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except Exception:
                proc.kill()

    async def _floor(self, req, answer, size: int, mk) -> None:
        """Time the same client against the gRPC floor server answering with the real answer's bytes (c1)."""
        from ganserve.benchmarks import grpc_floor
        from ganserve.serving.proto.inference import grpc_service_pb2_grpc as pb_grpc

        work = Path(tempfile.mkdtemp(prefix="ganserve-floor-"))
        proc, port = grpc_floor.start(answer.SerializeToString(), work)
        limit = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=limit) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                send = await mk(1, req=req, stub=stub)
                await closed_loop(send, 1, requests=3, warmup=0)
                lat, errors, wall = await closed_loop(send, 1, **self._amount(), warmup=0)
                self._add(summarise("grpc-floor", size, 1, 1, lat, errors, wall))
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    def _image_rpc(self, images, png: bytes, size: int):
        """(Transform, its request) for a model Transform serves, or (None, None): each condition takes its first
        choice from the card, a mask input an all-white mask of the image's size."""
        from ganserve.serving.conditioning import condition_choices
        from ganserve.serving.proto.ganserve.v1 import images_pb2

        if rpc_for(self.card) != "Transform":
            return None, None
        conditions = {spec.name: (condition_choices(spec) or ["0"])[0] for spec in self.card.conditions()}
        request = images_pb2.TransformRequest(model=self.cfg.model, image=png, conditions=conditions)
        if self.card.input_by_role("mask") is not None:
            buf = io.BytesIO()
            Image.new("L", (size, size), 255).save(buf, format="PNG")
            request.mask = buf.getvalue()
        return (images.Transform if images is not None else None), request

    async def _served_paths(self, target: str, monitor: ProcessMonitor) -> None:
        from ganserve.serving.proto.ganserve.v1 import images_pb2_grpc
        from ganserve.serving.proto.inference import grpc_service_pb2 as pb
        from ganserve.serving.proto.inference import grpc_service_pb2_grpc as pb_grpc
        from ganserve.serving.tensors import datatype_of

        limit = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        async with grpc.aio.insecure_channel(target, options=limit) as channel:
            oip = pb_grpc.GRPCInferenceServiceStub(channel)
            images = images_pb2_grpc.ImagesStub(channel)
            config = (await oip.ModelConfig(pb.ModelConfigRequest(name=self.cfg.model), timeout=60)).config
            if "ganserve.precision" in config.parameters:
                self.served_precision = config.parameters["ganserve.precision"].string_value
                self.served_as = (config.parameters["ganserve.provider"].string_value.removesuffix("ExecutionProvider")
                                  + "/" + self.served_precision)
            for size in self.cfg.sizes:
                if "oip-raw" in self.cfg.paths:
                    for batch in self.cfg.batches:
                        feeds = _feeds(self.card, size, batch)
                        req = pb.ModelInferRequest(model_name=self.cfg.model,
                                                   raw_input_contents=[a.tobytes() for a in feeds.values()])
                        for name, a in feeds.items():
                            req.inputs.add(name=name, datatype=datatype_of(a), shape=list(a.shape))
                        req.outputs.add(name=self.output_name)

                        async def mk(conc, req=req, stub=oip):
                            async def send():
                                await stub.ModelInfer(req, timeout=600)
                            return send
                        await self._sweep("oip-raw", size, batch, mk, monitor)
                        if "grpc-floor" in self.cfg.paths and batch == 1:
                            await self._floor(req, await oip.ModelInfer(req, timeout=600), size, mk)
                if "image-api" in self.cfg.paths:
                    png = _png_of(_image_input(self.card, size, 1), self.card)
                    rpc, ireq = self._image_rpc(images, png, size)
                    if rpc is None:
                        self.skipped.append(f"image-api: model {self.cfg.model} has no image input and image output "
                                            "(what Transform needs)")
                    else:
                        for fmt in ("PNG", "JPEG"):
                            ireq.options.output_format = fmt
                            split: list[tuple[float, float, float]] = []

                            async def mk_img(conc, ireq=type(ireq).FromString(ireq.SerializeToString()), rpc=rpc,
                                             split=split):
                                split.clear()

                                async def send():
                                    r = await rpc(ireq, timeout=600)
                                    split.append((r.timing.decode_ms, r.timing.infer_ms, r.timing.encode_ms))
                                return send
                            name = "image-api" if fmt == "PNG" else "image-api-jpeg"
                            await self._sweep(name, size, 1, mk_img, monitor, on_row=lambda st, split=split: _split(st, split))
                if "tritonclient-aio" in self.cfg.paths:
                    await self._triton(target, size, monitor)

    async def _http_paths(self, target: str | None, monitor: ProcessMonitor) -> None:
        """KServe v2 REST with the binary extension (http-raw) and the HTTP image endpoint (http-image), through one
        keep-alive aiohttp session: the same sizes, batches and concurrencies as their gRPC twins."""
        wanted = [p for p in ("http-raw", "http-image") if p in self.cfg.paths]
        if not wanted:
            return
        if target is None:
            self.skipped.append(f"{', '.join(wanted)}: the server has no HTTP port (--http-port -1)")
            return
        import aiohttp

        from ganserve.serving.tensors import datatype_of

        base = f"http://{target}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(self.cfg.concurrency))) as session:
            async def post(url: str, data: bytes, headers: dict[str, str]) -> None:
                async with session.post(url, data=data, headers=headers) as reply:
                    await reply.read()
                    if reply.status != 200:
                        raise RuntimeError(f"HTTP {reply.status}")

            for size in self.cfg.sizes:
                if "http-raw" in wanted:
                    for batch in self.cfg.batches:
                        feeds = _feeds(self.card, size, batch)
                        header = json.dumps({
                            "inputs": [{"name": n, "shape": list(a.shape), "datatype": datatype_of(a),
                                        "parameters": {"binary_data_size": a.nbytes}} for n, a in feeds.items()],
                            "outputs": [{"name": self.output_name, "parameters": {"binary_data": True}}]}).encode()
                        body = b"".join([header, *(a.tobytes() for a in feeds.values())])
                        headers = {"Inference-Header-Content-Length": str(len(header)),
                                   "Content-Type": "application/octet-stream"}

                        async def mk(conc, body=body, headers=headers):
                            async def send():
                                await post(f"{base}/v2/models/{self.cfg.model}/infer", body, headers)
                            return send
                        await self._sweep("http-raw", size, batch, mk, monitor)
                if "http-image" in wanted:
                    png = _png_of(_image_input(self.card, size, 1), self.card)
                    _, ireq = self._image_rpc(None, png, size)
                    if ireq is None or ireq.mask:
                        self.skipped.append(f"http-image: model {self.cfg.model} is not an image-to-image model "
                                            "without a mask")
                        continue
                    query = urlencode(dict(ireq.conditions))
                    url = f"{base}/v1/models/{self.cfg.model}/transform" + (f"?{query}" if query else "")

                    async def mk_img(conc, url=url, png=png):
                        async def send():
                            await post(url, png, {"Content-Type": "image/png"})
                        return send
                    await self._sweep("http-image", size, 1, mk_img, monitor)

    async def _triton(self, target: str, size: int, monitor: ProcessMonitor) -> None:
        try:
            import tritonclient.grpc.aio as tc
            from tritonclient.grpc import InferInput, InferRequestedOutput
        except ImportError:
            self.skipped.append("tritonclient-aio: tritonclient[grpc] is not installed (pip install 'ganserve[dev]')")
            return
        from ganserve.serving.tensors import datatype_of

        client = tc.InferenceServerClient(target)
        inputs = []
        for name, a in _feeds(self.card, size, 1).items():
            inputs.append(InferInput(name, list(a.shape), datatype_of(a)))
            inputs[-1].set_data_from_numpy(a)
        outs = [InferRequestedOutput(self.output_name)]

        async def mk(conc):
            async def send():
                r = await client.infer(self.cfg.model, inputs, outputs=outs, client_timeout=600)
                r.as_numpy(self.output_name)
            return send
        try:
            await self._sweep("tritonclient-aio", size, 1, mk, monitor)
        finally:
            await client.close()

    # -- the peer servers ------------------------------------------------------------------------------------------
    def _peer(self, path: str, ts_path: Path, work: Path, probe: tuple[int, ...]):
        """The peer server of a peer path (not started), or None with the reason in skipped."""
        from ganserve.benchmarks import peer_litserve, peer_torchserve

        # one precision rule for every peer (and torch eager): bf16 autocast where the CPU has bf16 hardware
        common = dict(bf16=self.torch_bf16, probe_shape=probe, log=lambda m: tqdm.write(m))
        if path.startswith("peer-torchserve"):
            if not peer_torchserve.has_java():
                self.skipped.append(f"{path}: no java on PATH (TorchServe's frontend needs Java 17)")
                return None
            batch = 8 if path == "peer-torchserve-batch8" else 1
            return peer_torchserve.TorchServePeer(ts_path, work / path, batch_size=batch, max_batch_delay_ms=5,
                                                  **common)
        return peer_litserve.LitServePeer(ts_path, work / path, **common)

    async def run_peers(self) -> None:
        """Each peer path in turn, one server at a time, on the same TorchScript network and inputs."""
        from ganserve.benchmarks import peers

        wanted = [p for p in PEER_PATHS if p in self.cfg.paths]
        module, why = self._torch_module()
        if module is None:
            self.skipped += [f"{p}: needs torch and the checkpoint: {why}" for p in wanted]
            return
        if len(self.card.inputs) != 1:
            self.skipped += [f"{p}: the peers' handlers take one input tensor; this model has "
                             f"{len(self.card.inputs)}" for p in wanted]
            return
        work = Path(tempfile.mkdtemp(prefix="ganserve-peer-"))
        trace = _image_input(self.card, model_sizes(self.card, [32])[0], 1)
        ts_path = peers.write_torchscript(module, trace, work / "model.ts")
        precision = "bf16 autocast" if self.torch_bf16 else "fp32"
        for path in wanted:
            peer = self._peer(path, ts_path, work, trace.shape)
            if peer is None:
                continue
            try:
                await asyncio.to_thread(peer.start)
            except Exception as exc:  # a peer that cannot start (no venv offline, a crash) leaves the others to run
                self.skipped.append(f"{path}: {peer.label} did not start: {described(exc)}")
                peer.stop()
                continue
            self.notes.append(f"{path}: {peer.setting()}; TorchScript, channels_last, {precision} (its strongest "
                              "setting on this CPU); HTTP/1.1 keep-alive, one connection per in-flight request")
            try:
                monitor = ProcessMonitor([peer.pid])
                for size in self.cfg.sizes:
                    x = _image_input(self.card, size, 1)

                    async def mk(conc, x=x, peer=peer):
                        return peer.sender(x, conc)
                    await self._sweep(path, size, 1, mk, monitor,
                                      cleanup=lambda peer=peer: peer.pool and peer.pool.shutdown(wait=False))
            finally:
                peer.stop()

    # -- the whole run ------------------------------------------------------------------------------------------
    def _precision_of(self, row: dict) -> str:
        """The arithmetic a row ran in, so its rate is compared with that precision's peak."""
        path = row["path"]
        if path.startswith("peer-"):  # the peers run under bf16 autocast where the CPU has bf16 hardware
            return "bf16" if self.torch_bf16 else "fp32"
        if path.startswith("torch-"):
            return "bf16" if "bf16" in path else "fp32"
        served = ("oip-raw", "image-api", "image-api-jpeg", "tritonclient-aio", "http-raw", "http-image")
        if path in served and getattr(self, "served_precision", None):
            return self.served_precision
        if path in ("ort-inprocess", *served):
            choice = getattr(self, "choice", None)
            return choice.candidate.precision if choice else self.card.precision
        for precision in ("int8", "bf16", "fp16"):
            if precision in path:
                return precision
        return "fp32"

    def run(self) -> dict:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        machine = self.cfg.machine or machine_facts()
        if "torch" in self.cfg.paths:
            self.run_torch()
        if "ort" in self.cfg.paths:
            self.run_ort()
        if any(p in self.cfg.paths for p in FAST_CPU_PATHS):
            self.run_fast_cpu()
        if any(p in self.cfg.paths for p in SERVER_PATHS):
            asyncio.run(self.run_served())
        if any(p in self.cfg.paths for p in PEER_PATHS):
            asyncio.run(self.run_peers())
        self.bar.close()
        peaks = {"fp32": machine["matmul_peak_gflops"], "bf16": machine.get("bf16_matmul_peak_gflops"),
                 "int8": machine.get("int8_matmul_peak_gops")}
        rows = []
        for s in self.rows:
            d = s.to_dict()
            d["gflops_per_s"] = d["extra"].pop("gflops_per_s")
            if d["path"] == "grpc-floor":  # transport only: no arithmetic to read against a peak
                d.update(gflops_per_s=None, precision=None, pct_of_peak=None, peak_of=None)
                rows.append(d)
                continue
            d["precision"] = self._precision_of(d)
            peak = peaks.get(d["precision"]) or peaks["fp32"]
            d["pct_of_peak"] = 100.0 * d["gflops_per_s"] / peak
            d["peak_of"] = d["precision"] if peaks.get(d["precision"]) else "fp32"
            rows.append(d)
        doc = {
            "model": self.cfg.model, "onnx": str(self.onnx_path), "precision": self.card.precision,
            "task": self.card.task, "command": self.cfg.command, "started": started, "machine": machine,
            "gflop_per_image": {str(k): v / 1e9 for k, v in self.flops.items()},
            "settings": {"sizes": self.cfg.sizes, "batches": self.cfg.batches, "concurrency": self.cfg.concurrency,
                         "duration_s": self.cfg.duration, "requests": self.cfg.requests},
            "server_peak_rss_mb": getattr(self, "server_peak_rss_mb", None),
            "results": rows, "skipped": self.skipped, "notes": self.notes,
            "candidates": getattr(self, "candidates", []), "codecs": getattr(self, "codecs", {}),
            "choice": [t.as_dict() for t in self.choice.table] if getattr(self, "choice", None) else [],
            "served_as": getattr(self, "served_as", None) or (self.choice.candidate.label if getattr(self, "choice", None)
                                                               else None),
            "perf_analyzer": None,  # room for NVIDIA perf_analyzer's CSV where a user has it (README shows how)
        }
        doc["ratios"] = report.compute_ratios(rows, self.cfg.sizes)
        doc["peer_ratios"] = report.peer_ratios(rows, self.cfg.sizes, self.cfg.concurrency)
        return doc


def machine_facts() -> dict[str, Any]:
    """CPU model and flags with the fp32, bf16 and int8 matrix peaks measured now (each row is read against the
    peak of the precision it ran in)."""
    int8 = int8_peak_gops()
    return {**cpu_info(), "matmul_peak_gflops": matmul_peak_gflops(), "bf16_matmul_peak_gflops": bf16_peak_gflops(),
            "int8_matmul_peak_gops": int8.value if int8 else None, "int8_peak_engine": int8.engine if int8 else None}


def run_bench(cfg: BenchConfig) -> tuple[dict, dict[str, Path]]:
    if cfg.duration is None and cfg.requests is None:
        cfg.duration = 3.0
    doc = Bench(cfg).run()
    out = cfg.out or Path("benchmarks/results") / datetime.now().strftime("%Y%m%d-%H%M%S")
    return doc, report.write_report(doc, Path(out))


def run_bench_models(cfg: BenchConfig, names: list[str],
                     checkpoints: dict[str, Path] | None = None) -> tuple[list[dict], dict[str, Path]]:
    """Bench several models of one repository in one run: one server for all of them, the machine measured once,
    one report per model in `<out>/<model>/` and a table across the models in `<out>/summary.md`."""
    from ganserve.serving.server import start_subprocess

    out = cfg.out or Path("benchmarks/results") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if cfg.duration is None and cfg.requests is None:
        cfg.duration = 3.0
    machine = machine_facts()
    served = any(p in cfg.paths for p in SERVER_PATHS)
    proc, port, _, http_port = start_subprocess(cfg.repo, cfg.server_args) if served else (None, 0, -1, -1)
    docs = []
    try:
        for name in names:
            one = dataclasses.replace(cfg, model=name, sizes=list(cfg.sizes), out=out / name, machine=machine,
                                      server_target=f"127.0.0.1:{port}" if proc else None,
                                      http_target=f"127.0.0.1:{http_port}" if proc and http_port > 0 else None,
                                      server_pids=[proc.pid] if proc else [],
                                      checkpoint=(checkpoints or {}).get(name) or _checkpoint_for(cfg, name))
            doc = Bench(one).run()
            report.write_report(doc, out / name)
            docs.append(doc)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except Exception:
                proc.kill()
    return docs, report.write_summary(docs, machine, cfg.command, out)


def _checkpoint_for(cfg: BenchConfig, name: str) -> Path | None:
    """The training checkpoint torch eager runs for `name`: a shipped entry's (the repository folder itself, as in
    models/) or the one its card names."""
    beside = cfg.repo / name / "checkpoint.pt"
    return beside if beside.is_file() else None
