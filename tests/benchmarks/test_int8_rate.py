"""benchmarks/int8_rate.py: the conv-stack ceiling and the shipped int8 variants, on a small size (not a timing test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ganserve.benchmarks.int8_rate import STACK_CHANNELS, conv_stack, main
from ganserve.core.onnxruntime_facts import OPENVINO
from ganserve.core.shipped import shipped_dir


def test_conv_stack_is_the_function_it_names() -> None:
    """Ten 3x3 convolutions with ReLU keep the shape and stay non-negative (ReLU last) at any size."""
    model = conv_stack()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, STACK_CHANNELS, 20, 12), dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) > 0.0
    assert [n.op_type for n in model.graph.node].count("Conv") == 10


@pytest.mark.skipif(OPENVINO not in ort.get_available_providers(), reason="the benchmark runs on OpenVINO")
def test_report_names_the_cpu_the_ceiling_and_each_int8_model(tmp_path: Path, capsys) -> None:
    assert main(["--repo", str(shipped_dir()), "--models", "srresnet,ssgan", "--size", "32", "--repeats", "1",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cpu"] and report["ceiling"]["int8_gops"] > 0 and report["ceiling"]["fp32_gops"] > 0
    rows = {r["model"]: r for r in report["models"]}
    assert "srresnet" in rows  # shipped with an int8 variant
    row = rows["srresnet"]
    assert row["ops"] > 0 and row["int8_share_of_ceiling"] == pytest.approx(row["int8_gops"] / report["ceiling"]["int8_gops"])
    assert "CPU:" in capsys.readouterr().out and "share of the int8 ceiling" in (tmp_path / "report.md").read_text()
