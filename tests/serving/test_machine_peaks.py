"""The machine's matmul ceilings (fp32, bf16, int8): positive rates, and int8 engines that compute the right product."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ganserve.benchmarks.peaks import cpu_info, int8_engines, int8_operands, int8_peak_gops, peaks


def test_peaks_are_positive_and_finite() -> None:
    found = peaks(fp32_n=256, bf16_n=256, int8_n=256, repeats=2)
    assert set(found) == {"fp32", "bf16", "int8"}
    expected = ["fp32", "int8"] + (["bf16"] if cpu_info()["bf16_hardware"] else [])
    for kind in expected:
        peak = found[kind]
        assert peak is not None, kind
        assert math.isfinite(peak.value) and peak.value > 0 and peak.engine in peak.candidates
        assert peak.value == max(peak.candidates.values())


def test_every_int8_engine_computes_the_exact_product() -> None:
    engines, skipped = int8_engines()
    assert engines, skipped
    a, b = int8_operands(64, seed=3)
    expected = a.astype(np.int32) @ b.astype(np.int32)
    assert np.abs(expected).max() > 127 * 127  # large enough that int8/int16 overflow would show
    for name, make in engines.items():
        got = make(a, b)()
        assert got.dtype == np.int32 and np.array_equal(got, expected), name


def test_int8_peak_names_a_checked_engine() -> None:
    peak = int8_peak_gops(n=256, repeats=2)
    if peak is None:
        pytest.skip("no int8 engine installed")
    engines, _ = int8_engines()
    assert peak.engine in engines and peak.n == 256 and peak.value > 0
