"""Parity cases the mutation run (mutation/run.py) found unchecked: random cases are fresh, seeded draws in each
input's valid range, the second spatial size stays on the model's grid, empty outputs have zero error, and the
check is quiet unless asked."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from ganserve.core.contract import TensorSpec
from ganserve.core.export_spec import ExportSpec
from ganserve.export.parity import ParityCase, max_abs_error, measure_parity, parity_cases
from ganserve.export.predictors import ort_predictor, ort_session

IMAGE = TensorSpec("x", [3, -1, -1], value_range=[0.0, 1.0])


def _random(spec: ExportSpec, seed: int = 0) -> list[dict[str, np.ndarray]]:
    return [c.inputs for c in parity_cases(spec, seed) if c.label.startswith("random")]


def _spec(inputs: list[TensorSpec], example: tuple[torch.Tensor, ...], multiple: int = 1) -> ExportSpec:
    """A spec around an identity module (parity_cases reads only its tensors, sizes and example)."""
    return ExportSpec(module=nn.Identity(), example_inputs=example, inputs=inputs,
                      outputs=[TensorSpec("y", [3, -1, -1])], task="translation", architecture="identity",
                      spatial_multiple=multiple)


def _doubling_model() -> bytes:
    """y = 2x on an (N, W) float input, W dynamic (so a case may have W = 0), as a real ONNX file."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "W"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_random_cases_are_fresh_draws_and_a_new_seed_redraws_every_one() -> None:
    """No random case repeats another's values (each batch and size checks new inputs), and each of seeds 0-3 gives
    every case values no other of these seeds gives that case."""
    spec = _spec([IMAGE], (torch.zeros(1, 3, 16, 16),))
    heads = {seed: [inputs["x"].ravel()[:16] for inputs in _random(spec, seed)] for seed in range(4)}
    for seed, cases in heads.items():
        assert len(cases) == 4
        assert all(not np.array_equal(cases[i], cases[j]) for i in range(4) for j in range(i + 1, 4)), seed
    for i in range(4):
        assert all(not np.array_equal(heads[a][i], heads[b][i]) for a in range(4) for b in range(a + 1, 4)), i


@pytest.mark.parametrize("multiple, step", [(1, 8), (3, 9), (5, 10), (7, 14), (8, 8), (16, 16)])
def test_the_second_size_grows_by_the_smallest_grid_multiple_of_at_least_8(multiple: int, step: int) -> None:
    """The grown parity size differs from the example by >= 8 pixels and stays on the model's spatial grid: dynamic
    axis k grows by k times the smallest multiple of spatial_multiple that is at least 8."""
    size = 4 * multiple
    spec = _spec([IMAGE], (torch.zeros(1, 3, size, size),), multiple)
    shapes = [inputs["x"].shape for inputs in _random(spec)]
    grown = (size + step, size + 2 * step)
    assert shapes == [(1, 3, size, size), (3, 3, size, size), (1, 3, *grown), (3, 3, *grown)]
    assert all(d % multiple == 0 for d in grown)


def test_random_integer_and_boolean_inputs_span_their_valid_values() -> None:
    """An integer input without labels (a class index) is drawn from 0..max(example), both ends included; one whose
    example is all 0 still varies over 0 and 1; one with labels covers every label index; a boolean input (a mask)
    is a fair coin per element."""
    inputs = [IMAGE,
              TensorSpec("index", [64], dtype="INT64", role="tensor", layout="NC"),
              TensorSpec("flag", [64], dtype="INT64", role="tensor", layout="NC"),
              TensorSpec("group", [64], dtype="INT64", role="condition", layout="NC", labels=["a", "b", "c"]),
              TensorSpec("mask", [256], dtype="BOOL", role="mask", layout="NC")]
    example = (torch.zeros(1, 3, 16, 16), torch.tensor([[0, 5, 2, 3] * 16]), torch.zeros(1, 64, dtype=torch.int64),
               torch.zeros(1, 64, dtype=torch.int64), torch.zeros(1, 256, dtype=torch.bool))
    cases = _random(_spec(inputs, example))
    assert len(cases) == 4
    values = {name: np.concatenate([c[name].ravel() for c in cases]) for name in ("index", "flag", "group", "mask")}
    assert all(c[name].dtype == np.int64 for c in cases for name in ("index", "flag", "group"))
    assert set(values["index"].tolist()) == {0, 1, 2, 3, 4, 5}
    assert set(values["flag"].tolist()) == {0, 1}
    assert set(values["group"].tolist()) == {0, 1, 2}
    assert values["mask"].dtype == np.bool_ and 0.45 < values["mask"].mean() < 0.55


def test_outputs_without_elements_have_zero_error() -> None:
    """An output with no elements matches exactly: max_abs_error is 0 (never negative), and so is every case's
    error when onnxruntime runs a real model on an empty input."""
    empty = {"y": np.zeros((2, 0), np.float32)}
    assert max_abs_error(empty, {"y": np.zeros((2, 0), np.float32)}) == 0.0
    assert max_abs_error({}, {}) == 0.0
    assert max_abs_error({**empty, "z": np.ones(3, np.float32)}, {**empty, "z": np.full(3, 1.25, np.float32)}) == 0.25
    cases = [ParityCase(f"empty x[{n}, 0]", {"x": np.zeros((n, 0), np.float32)}) for n in (2, 1)]
    result = measure_parity(lambda f: {"y": f["x"] * 2}, ort_predictor(ort_session(_doubling_model())), cases, 0.0)
    assert result["max_abs_error"] == 0.0 and [c["max_abs_error"] for c in result["checked"]] == [0.0, 0.0]


def test_measure_parity_prints_nothing_unless_asked(capsys: pytest.CaptureFixture) -> None:
    """By default measure_parity writes no progress bar (the export and library callers stay quiet);
    progress=True shows one on stderr."""
    run = ort_predictor(ort_session(_doubling_model()))
    cases = [ParityCase("random x[2, 5]", {"x": np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)})]
    result = measure_parity(lambda f: {"y": f["x"] * 2}, run, cases, 1e-6)
    assert result["max_abs_error"] == 0.0
    assert capsys.readouterr() == ("", "")
    measure_parity(lambda f: {"y": f["x"] * 2}, run, cases, 1e-6, progress=True)
    assert "parity fp32" in capsys.readouterr().err


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3, 4, 4), (1, 3, 8, 9), (2, 3, 8, 8)])
def test_an_output_of_another_shape_is_an_infinite_error_even_where_it_would_broadcast(shape: tuple) -> None:
    """A candidate output smaller, larger or broadcastable against the reference's (1, 3, 8, 8) fails parity as
    inf; it is never compared element by element (a (1, 3, 1, 1) zero output would otherwise score 0.0)."""
    ref = {"y": np.zeros((1, 3, 8, 8), np.float32)}
    assert max_abs_error(ref, {"y": np.zeros(shape, np.float32)}) == float("inf")
