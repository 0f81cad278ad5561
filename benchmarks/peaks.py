"""What machine a benchmark ran on, and its measured matrix-multiply peaks (the rooflines for GFLOP/s figures).

Three ceilings, each the best observed rate of one n×n product: fp32 (numpy's BLAS sgemm), bf16 (torch, where the
CPU has bf16 hardware) and int8 (the faster of ONNX Runtime's MatMulInteger on its CPU and OpenVINO providers and
torch._int_mm, whichever are installed). An int8 multiply-add counts as 2 ops, like a FLOP.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ganserve.core.machine import cpu_info, describe  # noqa: F401  (re-exported for the benchmarks)

# An int8 engine: given A (uint8, values 0..127 so it reads the same as int8) and B (int8), a zero-argument
# function that computes A @ B as int32 and returns it as a numpy array.
Int8Engine = Callable[[np.ndarray, np.ndarray], Callable[[], np.ndarray]]


@dataclass(frozen=True)
class Peak:
    """A measured matmul ceiling: its rate (GFLOP/s, or GOP/s for int8), the engine that reached it, the size."""

    value: float
    engine: str
    n: int
    candidates: dict[str, float] = field(default_factory=dict)  # every engine measured -> its rate
    skipped: dict[str, str] = field(default_factory=dict)  # engines not measured -> why
    sizes: dict[str, int] = field(default_factory=dict)  # engines measured at a smaller n than `n` (too slow) -> it

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict of this peak."""
        return {"value": self.value, "engine": self.engine, "n": self.n, "candidates": dict(self.candidates),
                "skipped": dict(self.skipped), "sizes": dict(self.sizes)}


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Shortest wall time of fn() over `repeats` runs after warm-up (thread pool start, kernel JIT, page faults)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _matmul_gflops(a, b, n: int, repeats: int) -> float:
    """Best observed rate of ``a @ b`` (n×n) over ``repeats`` runs after one warm-up, in GFLOP/s."""
    return 2.0 * n**3 / _best_seconds(lambda: a @ b, repeats) / 1e9


def _threads(threads: int | None) -> int:
    return threads or os.cpu_count() or 1


@contextmanager
def _torch_threads(torch, threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _torch_threads_if_loaded(threads: int) -> Iterator[None]:
    """Like _torch_threads where torch is already imported; nothing otherwise (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    with _torch_threads(torch, threads):
        yield


def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best observed float32 sgemm rate of numpy (BLAS) on an n×n product, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return _matmul_gflops(a, b, n, repeats)


def bf16_peak_gflops(n: int = 3072, repeats: int = 5, threads: int | None = None) -> float | None:
    """Best bf16 matmul rate of torch in GFLOP/s on all cores (None without bf16 hardware or torch).

    n=3072 saturates: on the 2-core Xeon with AMX, 2,970 GFLOP/s against 2,830 at n=2048 and 2,400 at n=4096.
    """
    if not cpu_info()["bf16_hardware"]:
        return None
    try:
        import torch
    except ImportError:
        return None
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    with _torch_threads(torch, _threads(threads)):
        return _matmul_gflops(a, b, n, repeats)


# -- int8 engines --------------------------------------------------------------------------------------------------
def _onnx_matmul_integer(n_rows: int, b: np.ndarray) -> bytes:
    """An ONNX graph Y = MatMulInteger(A, B): A a uint8 input, B an int8 initializer (so providers prepack it)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_peak",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n_rows, b.shape[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n_rows, b.shape[1]])],
        [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _ort_engine(provider: str, threads: int) -> Int8Engine:
    """MatMulInteger (u8 × s8 → s32) on one ONNX Runtime execution provider."""
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise RuntimeError(f"{provider} is not in this onnxruntime build")

    def make(a: np.ndarray, b: np.ndarray) -> Callable[[], np.ndarray]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(_onnx_matmul_integer(a.shape[0], b), options, providers=[provider])
        if session.get_providers()[0] != provider:
            raise RuntimeError(f"{provider} did not take the graph")
        feeds = {"A": a}
        return lambda: session.run(None, feeds)[0]
    return make


def _torch_int_mm_engine(threads: int) -> Int8Engine:
    """torch._int_mm (s8 × s8 → s32; oneDNN's VNNI/AMX kernels on CPU)."""
    import torch

    if not hasattr(torch, "_int_mm"):
        raise RuntimeError("this torch has no _int_mm")

    def make(a: np.ndarray, b: np.ndarray) -> Callable[[], np.ndarray]:
        ta, tb = torch.from_numpy(a.view(np.int8)), torch.from_numpy(b)
        return lambda: torch._int_mm(ta, tb).numpy()
    return make


def int8_engines(threads: int | None = None) -> tuple[dict[str, Int8Engine], dict[str, str]]:
    """The int8 matmul engines importable here, and why each of the others is not."""
    t = _threads(threads)
    factories: dict[str, Callable[[], Int8Engine]] = {
        "onnxruntime CPU MatMulInteger u8s8": lambda: _ort_engine("CPUExecutionProvider", t),
        "onnxruntime OpenVINO MatMulInteger u8s8": lambda: _ort_engine("OpenVINOExecutionProvider", t),
        "torch._int_mm s8s8": lambda: _torch_int_mm_engine(t),
    }
    engines, skipped = {}, {}
    for name, factory in factories.items():
        try:
            engines[name] = factory()
        except (ImportError, RuntimeError, AttributeError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return engines, skipped


def int8_operands(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (uint8 in 0..127, so it is the same matrix read as int8) and B (int8 in -128..127), both n×n."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 128, (n, n), dtype=np.uint8), rng.integers(-128, 128, (n, n), dtype=np.int8)


PROBE_N = 512  # one int8 run at this size first, to see whether the engine is fast enough to run at n
SLOW_RUN_S = 1.0  # an engine whose run at n would take longer is measured at PROBE_N


def int8_peak_gops(n: int = 2048, repeats: int = 5, threads: int | None = None) -> Peak | None:
    """Best int8 matmul rate in GOP/s over the engines installed here, with the engine's name (None if none ran).

    n=2048: on the 2-core Xeon with AMX, ONNX Runtime's CPU provider reached 5,150 GOP/s (4,100 at n=1024, 5,030 at
    n=4096 in 3 s), torch._int_mm 3,560 and the OpenVINO provider 400 on this graph.
    """
    engines, skipped = int8_engines(threads)
    probe_n = min(n, PROBE_N)
    operands = {n: int8_operands(n), probe_n: int8_operands(probe_n)}
    rates: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for name, make in engines.items():
        try:
            with _torch_threads_if_loaded(_threads(threads)):
                probe = make(*operands[probe_n])
                t0 = time.perf_counter()
                probe()
                # an engine with no fast kernel for this CPU (no VNNI/AMX) would take minutes at n: it is measured
                # at the probe's size, where it is still far from the peak the fast engines set
                size = n if (time.perf_counter() - t0) * (n / probe_n) ** 3 <= SLOW_RUN_S else probe_n
                run = probe if size == probe_n else make(*operands[n])
                rates[name] = 2.0 * size**3 / _best_seconds(run, repeats) / 1e9
                if size != n:
                    sizes[name] = size
        except Exception as exc:  # noqa: BLE001  an engine that fails at run time is reported, not fatal
            skipped[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    if not rates:
        return None
    engine = max(rates, key=rates.__getitem__)
    return Peak(rates[engine], engine, sizes.get(engine, n), rates, skipped, sizes)


def peaks(fp32_n: int = 1024, bf16_n: int = 3072, int8_n: int = 2048, repeats: int = 5) -> dict[str, Peak | None]:
    """The fp32, bf16 and int8 matmul ceilings of this machine, each with the engine that reached it."""
    fp32 = matmul_peak_gflops(fp32_n, repeats)
    bf16 = bf16_peak_gflops(bf16_n, repeats)
    return {
        "fp32": Peak(fp32, "numpy sgemm (BLAS)", fp32_n, {"numpy sgemm (BLAS)": fp32}),
        "bf16": None if bf16 is None or not math.isfinite(bf16) else
        Peak(bf16, "torch bf16 matmul", bf16_n, {"torch bf16 matmul": bf16}),
        "int8": int8_peak_gops(int8_n, repeats),
    }


if __name__ == "__main__":
    print(describe())
    for kind, peak in peaks().items():
        print(kind, "n/a" if peak is None else peak.as_dict())
