"""The card's memory cost, measured at export: present for each provider here, and its prediction is at least the
peak a fresh session takes at sizes the fit did not use; models whose memory does not grow with the input get none."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort

from ganserve.core.memory_cost import CostModel, card_key, run_peak
from ganserve.export.exporter import export_checkpoint, read_card
from ganserve.core.onnxruntime_facts import typical_feeds
from ganserve.export.predictors import raw_session


def test_the_card_carries_a_cost_that_covers_unseen_sizes(upsampler_ckpt: Path, tmp_path: Path) -> None:
    version = export_checkpoint(upsampler_ckpt, tmp_path / "repo", name="up")
    card = read_card(version)
    wanted = {card_key(p, "fp32") for p in ("CPUExecutionProvider", "OpenVINOExecutionProvider")
              if p in ort.get_available_providers()}
    assert set(card.memory) == wanted
    model = onnx.load(str(version / "model.onnx"))
    for provider in ("CPUExecutionProvider",):
        cost = CostModel.from_card(card.memory, provider, "fp32")
        assert cost is not None and cost.bytes_per_pixel > 0 and "measured" in cost.source
        session = raw_session(model, provider)
        names = [o.name for o in session.get_outputs()]
        session.run(names, typical_feeds(session.get_inputs(), 16))
        for side in (224, 352):  # the fit used 96 and 160
            peak = run_peak(lambda feeds: session.run(names, feeds), typical_feeds(session.get_inputs(), side))
            assert peak is not None and cost.working(side * side) >= peak, (side, peak, cost)


def test_a_fixed_size_model_gets_no_memory_figure(classifier_ckpt: Path, tmp_path: Path) -> None:
    card = read_card(export_checkpoint(classifier_ckpt, tmp_path / "repo", name="cls"))
    assert card.memory == {}


def test_each_variant_gets_its_own_figure_covering_an_unseen_size(upsampler_ckpt: Path, tmp_path: Path) -> None:
    version = export_checkpoint(upsampler_ckpt, tmp_path / "repo", name="up", variants=("int8",))
    card = read_card(version)
    here = [p for p in ("CPUExecutionProvider", "OpenVINOExecutionProvider") if p in ort.get_available_providers()]
    assert set(card.memory) == {card_key(p, q) for p in here for q in ("fp32", "int8")}
    int8 = CostModel.from_card(card.memory, "CPUExecutionProvider", "int8")
    assert int8 is not None and int8.bytes_per_pixel > 0
    session = raw_session(onnx.load(str(version / "model.int8.onnx")), "CPUExecutionProvider")
    names = [o.name for o in session.get_outputs()]
    session.run(names, typical_feeds(session.get_inputs(), 16))
    peak = run_peak(lambda feeds: session.run(names, feeds), typical_feeds(session.get_inputs(), 288))
    assert peak is not None and int8.working(288 * 288) >= peak, (peak, int8)
