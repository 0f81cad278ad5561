"""benchmarks.large_image sends one large picture through a real served model (tiled) and reports the tile plan,
the output size and the server's peak memory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ganserve.benchmarks.large_image import main


def test_a_tiled_large_request_is_measured(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
    from serving_models import write_model

    write_model(tmp_path / "repo", "sr2")  # a x2 nearest-neighbour SR model written with onnx.helper
    out = tmp_path / "large"
    assert main(["--repo", str(tmp_path / "repo"), "--model", "sr2", "--size", "96", "--tile-size", "32",
                 "--tile-overlap", "4", "--out", str(out)]) == 0
    served = json.loads((out / "results.json").read_text())["served"]
    assert served["output"] == [192, 192]
    assert served["tiles"] >= 9  # 96 pixels in 32-pixel tiles with overlap: at least 3 x 3
    assert served["server_peak_rss_mb"] >= served["server_rss_before_mb"] > 0 and served["wall_s"] > 0
    assert main(["--repo", str(tmp_path / "missing"), "--model", "sr2"]) == 2
