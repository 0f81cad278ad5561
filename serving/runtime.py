"""ONNX Runtime sessions: execution providers, thread settings, and the per-model candidate choice at load."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ganserve.contract import ModelCard
from ganserve.errors import RepositoryError
from ganserve.machine import cpu_info
from serving.precision import (
    PRECISIONS, Candidate, Choice, choose, list_candidates, load_reference_cases, version_files,
)

log = logging.getLogger("ganserve.serving")

# Short names accepted by --providers, in the order the server prefers them.
PROVIDER_NAMES = {
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
ORT_TYPES = {
    "tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64", "tensor(int64)": "INT64",
    "tensor(int32)": "INT32", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8", "tensor(bool)": "BOOL",
}
DEFAULT_PROVIDERS = ["cuda", "openvino", "cpu"]


def requested_providers(requested: list[str] | None = None) -> list[str]:
    """Full ORT names of the requested providers, best first, CPU always last (an unknown name is an error)."""
    wanted = [s.strip().lower() for s in (requested or DEFAULT_PROVIDERS) if s.strip()]
    unknown = [s for s in wanted if s not in PROVIDER_NAMES]
    if unknown:
        raise RepositoryError(f"unknown execution provider(s) {unknown} (known: {', '.join(PROVIDER_NAMES)})")
    names = list(dict.fromkeys(PROVIDER_NAMES[s] for s in wanted))
    return names if "CPUExecutionProvider" in names else [*names, "CPUExecutionProvider"]


def select_providers(requested: list[str] | None = None) -> tuple[list[str], str]:
    """Providers to ask ORT for, best first, and a sentence saying why (CPU is always the last resort)."""
    available = ort.get_available_providers()
    chosen, missing = [], []
    for full in requested_providers(requested):
        (chosen if full in available else missing).append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    reason = f"using {chosen[0]}"
    if missing:
        reason += f"; not in this onnxruntime build ({ort.get_device()}): {', '.join(missing)}"
    return chosen, reason


@dataclass
class RuntimeSettings:
    """How sessions are built; one-to-one with the serve command's flags."""

    providers: list[str] | None = None
    intra_op_threads: int = 0  # 0 = the cores divided among the streams
    precision: str = "auto"  # auto = the fastest candidate that passes the reference check; else pinned
    bf16_hardware: bool | None = None  # None = read /proc/cpuinfo
    timing_size: int = 64  # spatial size of the typical input the candidates are timed on
    streams: int = 1  # runs of one model in flight at once: 1 = latency mode, >1 = throughput mode

    def __post_init__(self) -> None:
        if self.precision not in ("auto", *PRECISIONS):
            raise RepositoryError(f"unknown precision {self.precision!r} (auto, {', '.join(PRECISIONS)})")
        if self.streams < 1:
            raise RepositoryError(f"streams must be >= 1, got {self.streams}")

    def threads(self) -> int:
        """Threads per run: the flag's, else the cores shared among the streams."""
        return self.intra_op_threads or max(1, (os.cpu_count() or 1) // self.streams)


class OrtRunner:
    """One model version's ORT session; `run` is the synchronous callable the batcher drives."""

    def __init__(self, path: Path, settings: RuntimeSettings, candidate: Candidate | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads()
        options.inter_op_num_threads = 1
        if candidate is None:
            providers, self.provider_reason = select_providers(settings.providers)
            self.precision = "fp32"
        else:
            path, self.precision = candidate.path, candidate.precision
            providers = [(candidate.provider, _with_threads(candidate, settings.threads()))]
            if candidate.provider != "CPUExecutionProvider":
                providers.append("CPUExecutionProvider")  # ops the first provider lacks run here
            self.provider_reason = f"using {candidate.label}"
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for corrupt or unsupported files
            raise RepositoryError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:300]})") from exc
        self.provider = self.session.get_providers()[0]
        if candidate is not None and self.provider != candidate.provider:
            raise RepositoryError(f"{candidate.provider} did not start for {path.name} (onnxruntime fell back to "
                                  f"{self.provider})")
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every output for already-validated feeds."""
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values))


def _with_threads(candidate: Candidate, threads: int) -> dict[str, str]:
    """Provider options plus the thread count where the provider takes its own (OpenVINO)."""
    if candidate.provider == "OpenVINOExecutionProvider":
        return {**candidate.options, "num_of_threads": str(threads)}
    return dict(candidate.options)


def typical_inputs(runner: OrtRunner, spatial: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch-1 input of the usual serving size, values uniform in [0, 1) (what candidates are timed on)."""
    rng = np.random.default_rng(seed)
    feeds = zero_inputs(runner, spatial)
    return {k: rng.random(v.shape).astype(v.dtype) if v.dtype.kind == "f" else v for k, v in feeds.items()}


def zero_inputs(runner: OrtRunner, spatial: int = 16) -> dict[str, np.ndarray]:
    """A small all-zero input for warm-up: dynamic axes get 1 (batch) or `spatial` (others)."""
    feeds = {}
    for name, meta in runner.inputs.items():
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else spatial) for i, d in enumerate(meta.shape)]
        dtype = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8,
                 "BOOL": np.bool_, "FP64": np.float64, "INT8": np.int8}[ORT_TYPES.get(meta.type, "FP32")]
        feeds[name] = np.zeros(shape, dtype=dtype)
    return feeds


def choose_runner(version_dir: Path, card: ModelCard | None, reference: Path | None, settings: RuntimeSettings,
                  providers: list[str] | None = None, precision: str | None = None) -> Choice:
    """Build the candidates this machine supports for one model version and keep the fastest that passes.

    `providers`/`precision` pin this model (config.pbtxt parameters); otherwise the server-wide settings apply.
    A pinned precision that this machine cannot run is an error, never a silent substitute.
    """
    asked = providers or settings.providers
    names = requested_providers(asked)
    named_cpu = asked is None or any(p.strip().lower() == "cpu" for p in asked)
    pinned = precision or (settings.precision if settings.precision != "auto" else None)
    bf16 = bool(cpu_info()["bf16_hardware"]) if settings.bf16_hardware is None else settings.bf16_hardware
    files = version_files(version_dir, card.precision if card else "fp32")
    candidates, skipped = list_candidates(files, names, ort.get_available_providers(), bf16, pinned)
    for row in skipped:
        log.info("%s: %s/%s not a candidate: %s", version_dir, row.provider, row.precision, row.reason)
    if not candidates:
        why = "; ".join(f"{t.provider}/{t.precision}: {t.reason}" for t in skipped)
        raise RepositoryError(f"no candidate for precision {pinned or 'any'} on this machine ({why})")
    cases = load_reference_cases(reference)
    return choose(card, candidates, skipped, cases, lambda c: OrtRunner(c.path, settings, c),
                  lambda r: typical_inputs(r, card.tile_size if card and card.tile_size else settings.timing_size),
                  pinned=pinned is not None,
                  last_resort=frozenset() if named_cpu else frozenset({"CPUExecutionProvider"}))
