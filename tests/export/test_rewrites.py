"""Exact graph rewrites at export: PReLU slopes as (1, C, 1, 1), the same function bit for bit."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from ganserve.core.onnxruntime_facts import openvino_options
from ganserve.export.rewrites import prelu_slopes


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.PReLU(8), nn.Conv2d(8, 3, 3, padding=1))
        self.head = nn.PReLU(4)  # on a 2-d input: its slope must stay as it is

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.body(x), self.head(x.mean(dim=(2, 3)).repeat(1, 2)[:, :4])


def exported() -> onnx.ModelProto:
    torch.manual_seed(0)
    module = Stack().eval()
    for prelu in (module.body[1], module.body[3], module.head):
        prelu.weight.data.uniform_(-0.5, 0.5)  # distinct slopes per channel, negative ones too
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, as export/onnx_export.py does
        torch.onnx.export(module, (torch.zeros(1, 3, 16, 16),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y", "z"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}, "z": {0: "n"}})
    return onnx.load_from_string(buf.getvalue())


def _slopes(model: onnx.ModelProto) -> list[list[int]]:
    inits = {t.name: t for t in model.graph.initializer}
    return [list(inits[n.input[1]].dims) for n in model.graph.node if n.op_type == "PRelu"]


def _run(model: onnx.ModelProto, x: np.ndarray, provider: str = "CPUExecutionProvider") -> list[np.ndarray]:
    # OpenVINO with the fp32 hint: without it, a bf16 CPU infers in bf16 and the comparison below would see that
    options = openvino_options("fp32") if provider == "OpenVINOExecutionProvider" else {}
    session = ort.InferenceSession(model.SerializeToString(), providers=[(provider, options)])
    return session.run(None, {"x": x})


def test_slopes_become_4d_and_the_outputs_are_bit_identical() -> None:
    original = exported()
    assert _slopes(original) == [[8, 1, 1], [8, 1, 1], [4]]  # what torch writes
    rewritten, changed = prelu_slopes(exported())
    assert changed == 2 and _slopes(rewritten) == [[1, 8, 1, 1], [1, 8, 1, 1], [4]]
    onnx.checker.check_model(rewritten)
    x = np.random.default_rng(1).normal(0, 1, (2, 3, 21, 13)).astype(np.float32)
    for a, b in zip(_run(original, x), _run(rewritten, x)):
        assert np.array_equal(a, b)
    if "OpenVINOExecutionProvider" in ort.get_available_providers():  # the runtime the rewrite is for
        for a, b in zip(_run(original, x), _run(rewritten, x, "OpenVINOExecutionProvider")):
            np.testing.assert_allclose(a, b, atol=1e-4)


def test_a_shared_slope_is_left_alone() -> None:
    model = exported()
    prelus = [n for n in model.graph.node if n.op_type == "PRelu"]
    shared = prelus[0].input[1]
    prelus[1].input[1] = shared  # both 4-d PReLUs now read one slope initializer
    rewritten, changed = prelu_slopes(model)
    inits = {t.name: t for t in rewritten.graph.initializer}
    assert changed == 0 and list(inits[shared].dims) == [8, 1, 1]
    assert numpy_helper.to_array(inits[shared]).shape == (8, 1, 1)


@pytest.mark.parametrize("times", [1, 2])
def test_the_rewrite_is_idempotent(times: int) -> None:
    model = exported()
    for _ in range(times):
        model, _ = prelu_slopes(model)
    assert _slopes(model) == [[1, 8, 1, 1], [1, 8, 1, 1], [4]]
