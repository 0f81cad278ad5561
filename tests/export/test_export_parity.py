"""Parity cases and gates: two batch sizes, two spatial sizes, real inputs; errors measured, not assumed."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import export_tiny_apps as tiny
from ganserve.export.onnx_export import to_onnx
from ganserve.export.parity import max_abs_error, measure_parity, parity_cases
from ganserve.export.predictors import ort_predictor, ort_session, torch_predictor
from ganserve.core.errors import GanserveError


def test_cases_cover_two_batches_and_two_sizes() -> None:
    spec = tiny.TinyUpsampler(tiny.UpsamplerConfig()).export_spec()
    cases = parity_cases(spec)
    shapes = [c.inputs["lr"].shape for c in cases]
    assert shapes[:5] == [(1, 3, 16, 16), (1, 3, 16, 16), (3, 3, 16, 16), (1, 3, 24, 32), (3, 3, 24, 32)]
    assert shapes[5:] == [(1, 3, 24, 24), (2, 3, 24, 24), (1, 3, 40, 32), (2, 3, 40, 32)]  # real, then doubled
    assert [c.label.split()[0] for c in cases] == ["example"] + ["random"] * 4 + ["real"] * 4
    lo, hi = spec.inputs[0].value_range
    assert all(lo <= c.inputs["lr"].min() and c.inputs["lr"].max() <= hi for c in cases)
    assert np.array_equal(cases[6].inputs["lr"][1], cases[5].inputs["lr"][0][..., ::-1])


def test_fixed_size_model_varies_batch_only() -> None:
    spec = tiny.TinyClassifier(tiny.ClassifierConfig()).export_spec()
    assert {c.inputs["image"].shape[1:] for c in parity_cases(spec)} == {(1, 8, 8)}
    assert {c.inputs["image"].shape[0] for c in parity_cases(spec)} == {1, 2, 3}


def test_max_abs_error_values() -> None:
    a = {"y": np.array([[0.0, 1.0, 2.0]], dtype=np.float32)}
    assert max_abs_error(a, {"y": np.array([[0.0, 1.5, 1.75]], dtype=np.float32)}) == 0.5
    assert math.isinf(max_abs_error(a, {"y": np.array([[0.0, np.nan, 2.0]], dtype=np.float32)}))
    assert math.isinf(max_abs_error(a, {"y": np.zeros((1, 4), dtype=np.float32)}))
    assert math.isinf(max_abs_error(a, {}))


def test_fp32_parity_within_tolerance_and_broken_graph_caught() -> None:
    spec = tiny.TinyUpsampler(tiny.UpsamplerConfig()).export_spec()
    result = measure_parity(torch_predictor(spec), ort_predictor(ort_session(to_onnx(spec))), parity_cases(spec), 1e-4)
    assert result["cases"] == 9 and result["max_abs_error"] < 1e-5
    broken = tiny.BrokenSizeBranch(tiny.BrokenConfig()).export_spec()
    cases = parity_cases(broken)
    with pytest.raises(GanserveError, match=r"max abs error 1 > 0.0001 on random x\[3, 3, 24, 32\]"):
        measure_parity(torch_predictor(broken), ort_predictor(ort_session(to_onnx(broken))), cases, 1e-4)


def test_spec_inconsistencies_are_refused() -> None:
    spec = tiny.TinyUpsampler(tiny.UpsamplerConfig()).export_spec()
    spec.dynamic_spatial = False
    with pytest.raises(GanserveError, match="dynamic_spatial is False"):
        to_onnx(spec)
    spec = tiny.TinyUpsampler(tiny.UpsamplerConfig()).export_spec()
    with pytest.raises(GanserveError, match="opset 9 not supported"):
        to_onnx(spec, opset=9)
    spec.module.train()  # to_onnx puts the module in eval mode itself: no dropout reaches the graph
    ops = {n.op_type for n in to_onnx(spec).graph.node}
    assert "Dropout" not in ops and "BatchNormalization" not in ops


def test_export_imports_no_serving_or_benchmarks() -> None:
    """Import rule from the design: export may use training and the contract, never serving or benchmarks."""
    root = Path(__file__).resolve().parents[2] / "export"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("serving", "benchmarks", "tests")], path
