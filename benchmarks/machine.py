"""What machine a benchmark ran on, and its measured matrix-multiply peak (the roofline for GFLOP/s figures)."""

from __future__ import annotations

import time

import numpy as np

from ganserve.machine import cpu_info, describe  # noqa: F401  (re-exported for the benchmarks)


def _matmul_gflops(a, b, n: int, repeats: int) -> float:
    """Best observed rate of ``a @ b`` (n×n) over ``repeats`` runs after one warm-up, in GFLOP/s."""
    a @ b  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best observed float32 sgemm rate of numpy (BLAS) on an n×n product, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return _matmul_gflops(a, b, n, repeats)


def bf16_peak_gflops(n: int = 2048, repeats: int = 5) -> float | None:
    """Best bf16 matmul rate of torch in GFLOP/s where the CPU has bf16 hardware (None elsewhere or without torch)."""
    if not cpu_info()["bf16_hardware"]:
        return None
    try:
        import torch
    except ImportError:
        return None
    return _matmul_gflops(torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16), n, repeats)
