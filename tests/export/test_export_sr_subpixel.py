"""A sub-pixel SRResNet exports like the paper's: one DepthToSpace for its upsampling (and one for the bicubic skip's
convolution form), parity with torch at an untraced size, its card says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import export_tiny_apps as tiny
from export_helpers import run_cli
from ganserve.core.contract import CARD_FILE, ModelCard
from ganserve.training.checkpoint import build_from_checkpoint


def test_subpixel_srresnet_exports_with_parity_and_runs_at_any_size(tmp_path: Path, capsys) -> None:
    config = {"generator": {"blocks": 1, "channels": 8, "batch_norm": False, "bicubic_skip": True,
                            "upsample": "subpixel"}}
    ckpt = tiny.save_tiny_checkpoint(tmp_path / "sub.pt", "srresnet", config)
    repo = tmp_path / "repo"
    rc, _, err = run_cli(capsys, str(ckpt), "--repo", str(repo), "--quiet")
    assert rc == 0, err
    path = repo / "srresnet" / "1" / "model.onnx"
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("DepthToSpace") == 2 and "Resize" not in ops, ops  # the network's and the bicubic skip's
    card = ModelCard.load(repo / "srresnet" / CARD_FILE)
    assert "sub-pixel upsampling" in card.architecture
    assert card.parity["max_abs_error"] <= card.parity["tolerance"]

    generator = build_from_checkpoint(ckpt).generator.eval()
    x = np.random.default_rng(3).random((2, 3, 11, 17), dtype=np.float32)  # not a size the export traced
    sess = ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = generator(torch.from_numpy(x)).clamp(0, 1).numpy()
    assert got.shape == (2, 3, 44, 68) and np.abs(got - want).max() < 1e-5
