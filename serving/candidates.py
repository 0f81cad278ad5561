"""Per-model choice of execution provider and precision: list the candidates this machine supports, time each on
the model's typical input, check each against the reference set, and serve the fastest one that passes.

A candidate is (provider, precision, model file). fp32 and int8 come from the version folder's files (model.onnx
holds the card's precision; model.int8.onnx / model.fp16.onnx are the export stage's variants); bf16 is the fp32
file run by the OpenVINO provider with its inference-precision hint, only on a CPU with bf16 hardware; fp16 runs
only on CUDA. The quality rule: image outputs lose at most 0.1 dB PSNR against the reference set's ground truth
(or stay within the max-abs tolerance of the fp32 outputs when the set has no ground truth), classifiers change
no top-1 answer, other tensors stay within the max-abs tolerance.
"""

from __future__ import annotations

import json
import math
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ganserve.core.contract import MODEL_FILE, ModelCard, variant_file
from ganserve.core.errors import RepositoryError, described
from ganserve.core.onnxruntime_facts import CUDA, OPENVINO, openvino_options, short
from ganserve.core.precisions import PRECISIONS
from ganserve.core.quality import (  # noqa: F401  (re-exported: the server's rule is the core's)
    CLASS_ROLES, PSNR_DROP_DB, REFERENCE_TOLERANCE, ReferenceCase, check_quality, reference_cases,
)

log = logging.getLogger("ganserve.serving")

@dataclass
class Candidate:
    """One way to run the model: an ORT provider (with its options) on one model file at one precision."""

    provider: str
    precision: str
    path: Path
    options: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.provider.removesuffix('ExecutionProvider')}/{self.precision}"


@dataclass
class Trial:
    """One row of the choice table: what was tried (or why not), how fast, and the quality check's verdict."""

    provider: str
    precision: str
    file: str = ""
    status: str = "unavailable"  # unavailable | error | failed quality | passed | chosen
    p50_ms: float | None = None
    quality: str = ""
    reason: str = ""
    source: str = "measured"  # measured (this load) | cache (a previous load's measurement, see choice_cache)
    p50_ms_by_size: dict[str, float] = field(default_factory=dict)  # every timing size (p50_ms is the first)

    def as_dict(self) -> dict[str, object]:
        return {"provider": self.provider, "precision": self.precision, "file": self.file, "status": self.status,
                "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 3), "quality": self.quality,
                "reason": self.reason, "source": self.source,
                "p50_ms_by_size": {k: round(v, 3) for k, v in self.p50_ms_by_size.items()}}

    @classmethod
    def from_dict(cls, row: dict[str, object]) -> "Trial":
        """A row back from as_dict's JSON (the choice cache stores the table that way)."""
        p50 = row.get("p50_ms")
        return cls(str(row["provider"]), str(row["precision"]), str(row.get("file", "")),
                   str(row.get("status", "unavailable")), None if p50 is None else float(p50),
                   str(row.get("quality", "")), str(row.get("reason", "")), str(row.get("source", "measured")),
                   {str(k): float(v) for k, v in dict(row.get("p50_ms_by_size") or {}).items()})

    def line(self) -> str:
        speed = "-" if self.p50_ms is None else " / ".join(f"{v:.2f}" for v in self.p50_ms_by_size.values()) + " ms"
        if self.p50_ms is not None and not self.p50_ms_by_size:
            speed = f"{self.p50_ms:.2f} ms"
        label = f"{self.provider.removesuffix('ExecutionProvider')}/{self.precision}"
        cached = " (cached)" if self.source == "cache" and self.p50_ms is not None else ""
        return f"{label:<14} {self.status:<14} {speed:>11}{cached}  {self.quality or self.reason}"


def load_reference_cases(path: Path | None) -> list[ReferenceCase]:
    """reference.npz as cases (layout: ganserve.core.quality.reference_cases); an unreadable file is a RepositoryError."""
    if path is None:
        return []
    try:
        with np.load(path) as data:
            return reference_cases((key, data[key]) for key in data.files)
    except (OSError, ValueError, KeyError) as exc:
        raise RepositoryError(f"{path}: unreadable reference set ({exc})") from exc


def version_files(version_dir: Path, base_precision: str) -> dict[str, Path]:
    """Model files of one version by precision: model.onnx at the card's precision plus any variant files."""
    files = {base_precision: version_dir / MODEL_FILE}
    for precision in PRECISIONS:
        path = version_dir / variant_file(precision)
        if precision not in files and path.exists():
            files[precision] = path
    return files


def list_candidates(files: dict[str, Path], providers: list[str], available: list[str], bf16_hardware: bool,
                    precision: str | None = None) -> tuple[list[Candidate], list[Trial]]:
    """The candidates to try, best provider first, and a table row with the reason for each one left out."""
    wanted = [precision] if precision else list(PRECISIONS)
    tries: list[Candidate] = []
    skipped: list[Trial] = []
    for provider in providers:
        if provider not in available:
            skipped.append(Trial(provider, precision or "*", reason="provider not in this onnxruntime build"))
            continue
        for p in wanted:
            reason = _unsupported(provider, p, files, bf16_hardware)
            if reason:
                skipped.append(Trial(provider, p, reason=reason))
                continue
            path = files["fp32"] if p == "bf16" else files[p]
            tries.append(Candidate(provider, p, path, openvino_options(p) if provider == OPENVINO else {}))
    return tries, skipped


def _unsupported(provider: str, precision: str, files: dict[str, Path], bf16_hardware: bool) -> str:
    """Why this provider cannot run this precision here ("" when it can)."""
    name = short(provider)
    if precision == "bf16":
        if provider != OPENVINO:
            return f"bf16 runs only through the OpenVINO provider ({name} has no bf16 kernels)"
        if not bf16_hardware:
            return "this CPU has no bf16 hardware (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo)"
        return "" if "fp32" in files else "bf16 needs the fp32 model file"
    if precision == "fp16" and provider != CUDA:
        return "fp16 runs only on CUDA (CPU providers cast it back to fp32)"
    if precision == "int8" and provider == CUDA:
        return "int8 QDQ is served by CPU providers only"
    if precision not in files:
        return f"no {variant_file(precision)} in the version folder"
    return ""


# -- timing and choice ---------------------------------------------------------------------------------
def median_ms(run: Callable[[], object], repeats: int = 5, budget_s: float = 1.5) -> float:
    """Median wall time of `run` in ms after one untimed call (OpenVINO compiles per shape on the first)."""
    run()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats and (not times or time.perf_counter() < deadline):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


@dataclass
class Choice:
    """The candidate a model version serves with, the runner built for it, and the table behind the choice."""

    candidate: Candidate
    runner: object
    table: list[Trial]
    pinned: bool = False
    passed: bool = True  # the served candidate passed the reference check (False: the model as exported, by default)
    source: str = "measured"  # measured: every candidate timed at this load | cache: a stored choice, re-checked
    built: list[str] = field(default_factory=list)  # labels of the candidates this load built
    cache_key: str = ""  # the choice cache's key for this choice ("" = cache off)
    cached: dict = field(default_factory=dict)  # the cache entry as stored (the server adds the measured memory cost)

    @property
    def summary(self) -> str:
        row = next(t for t in self.table if t.status == "chosen")
        speed = "" if row.p50_ms is None else f", {row.p50_ms:.2f} ms on the typical input"
        how = "pinned" if self.pinned else "fastest that passes"
        if self.source == "cache":
            how += "; choice from the cache, reference check re-run"
        return f"{self.candidate.label} ({Path(row.file).name}{speed}; {how})"

    def parameters(self) -> dict[str, str]:
        """Strings for ModelConfig.parameters: the choice, where it came from, and its table as JSON."""
        return {"ganserve.provider": self.candidate.provider, "ganserve.precision": self.candidate.precision,
                "ganserve.model_file": self.candidate.path.name, "ganserve.choice": "pinned" if self.pinned else "auto",
                "ganserve.choice_source": self.source,
                "ganserve.candidates": json.dumps([t.as_dict() for t in self.table])}


def _check(card: ModelCard | None, cases: list[ReferenceCase], runner: object, precision: str) -> tuple[bool, str]:
    """Run the reference set through one runner and judge it (no reference set: nothing to check)."""
    if not cases:
        return True, "no reference set: not checked"
    return check_quality(card, cases, [runner.run(case.inputs) for case in cases], precision)


TimingFeeds = Callable[[object], dict[str, dict[str, np.ndarray]]]  # runner -> {size label: typical input}


def _relative_speed(rows: list[Trial]) -> dict[int, float]:
    """Each row's geometric mean, over the timing sizes, of its p50 over the fastest row's p50 at that size (1.0 =
    fastest everywhere), so a candidate that wins small inputs but loses large ones is not picked on one size."""
    sizes = [k for k in rows[0].p50_ms_by_size] if rows else []
    best = {k: min(r.p50_ms_by_size[k] for r in rows) for k in sizes}
    return {id(r): math.exp(sum(math.log(r.p50_ms_by_size[k] / max(best[k], 1e-9)) for k in sizes) / len(sizes))
            for r in rows} if sizes else {id(r): r.p50_ms or 0.0 for r in rows}


def choose(card: ModelCard | None, candidates: list[Candidate], skipped: list[Trial], cases: list[ReferenceCase],
           build: Callable[[Candidate], object], timing_feeds: TimingFeeds,
           pinned: bool = False, last_resort: frozenset[str] = frozenset()) -> Choice:
    """Try every candidate; serve the fastest that passes the reference check.

    `timing_feeds` gives each runner's typical inputs, one per timing size (e.g. the tile a tile-safe model runs on,
    or a small and a large whole image); "fastest" is the best geometric mean over them of the time relative to the
    fastest candidate at each size.

    With no candidate passing, only the first candidate at the file's own precision (the model as exported) may
    serve, with the failure in the table and a warning; a faster precision that fails is never served unless pinned. `build` makes a runner
    (an object with .run(feeds)); `timing_feeds` gives a runner's typical input. Providers in `last_resort` (CPU
    when the user named others) serve only when no candidate of the named providers passes.
    """
    table = list(skipped)
    tried: list[tuple[Candidate, object, Trial]] = []
    built: list[str] = []
    for cand in candidates:
        row = Trial(cand.provider, cand.precision, str(cand.path))
        table.append(row)
        try:
            built.append(cand.label)
            runner = build(cand)
            ok, row.quality = _check(card, cases, runner, cand.precision)
            for i, (label, feeds) in enumerate(timing_feeds(runner).items()):
                # further sizes get a shorter budget: they rank the candidates, the first one is the headline figure
                budget = {} if i == 0 else {"repeats": 3, "budget_s": 0.5}
                row.p50_ms_by_size[label] = median_ms(lambda feeds=feeds: runner.run(feeds), **budget)
            row.p50_ms = next(iter(row.p50_ms_by_size.values()))
        except Exception as exc:  # a provider that cannot build or run this graph is a candidate that failed
            row.status, row.reason = "error", described(exc)
            continue
        row.status = "passed" if ok else "failed quality"
        tried.append((cand, runner, row))
    passing = [t for t in tried if t[2].status == "passed"]
    passing = [t for t in passing if t[0].provider not in last_resort] or passing
    if passing:
        speed = _relative_speed([t[2] for t in passing])
        cand, runner, row = min(passing, key=lambda t: speed[id(t[2])])
    else:
        base = tried if pinned else [t for t in tried if t[0].path.name == MODEL_FILE and t[0].precision != "bf16"]
        if not base:
            reasons = "; ".join(f"{t.provider}/{t.precision}: {t.status} {t.reason or t.quality}" for t in table)
            raise RepositoryError(f"no execution provider/precision can serve this model ({reasons})")
        cand, runner, row = base[0]
        log.warning("no candidate reproduces the reference set; serving %s (%s): %s",
                    cand.label, "pinned" if pinned else "the model as exported", row.quality)
    row.status = "chosen"
    return Choice(cand, runner, table, pinned, passed=bool(passing), built=built)


def reuse(card: ModelCard | None, candidate: Candidate, table: list[Trial], cases: list[ReferenceCase],
          build: Callable[[Candidate], object], timing_feeds: TimingFeeds,
          pinned: bool = False, passed: bool = True) -> Choice | None:
    """Serve a stored choice: build only its candidate and re-run the reference check, with no timing.

    None (measure everything again) when it cannot build or run, or when it passed the check at measurement but
    fails it now; a choice that was the model as exported despite failing stays so, with the warning. One untimed
    run of the typical input stands in for the timing's warm-up (OpenVINO compiles per shape on the first run).
    """
    try:
        runner = build(candidate)
        ok, quality = _check(card, cases, runner, candidate.precision)
        for feeds in timing_feeds(runner).values():
            runner.run(feeds)
    except Exception as exc:  # the stored choice no longer builds here: measure every candidate again
        log.warning("cached choice %s cannot run (%s); measuring every candidate again", candidate.label,
                    described(exc))
        return None
    if passed and not ok:
        log.warning("cached choice %s fails the reference check now (%s); measuring every candidate again",
                    candidate.label, quality)
        return None
    if not ok:
        log.warning("no candidate reproduces the reference set (cached); serving %s (%s): %s", candidate.label,
                    "pinned" if pinned else "the model as exported", quality)
    rows = [Trial(**{**t.__dict__, "source": "cache"}) for t in table]
    for row in rows:
        if row.status == "chosen":
            row.quality = quality
    return Choice(candidate, runner, rows, pinned, passed=ok, source="cache", built=[candidate.label])
