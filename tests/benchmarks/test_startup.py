"""benchmarks.startup times real cold and warm starts of `ganserve serve` (the warm one reads the cold one's cache)."""

from __future__ import annotations

import json
from pathlib import Path

from ganserve.benchmarks.startup import main


def test_cold_and_warm_starts_are_timed(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
    from serving_models import make_repo

    repo = make_repo(tmp_path / "r", broken=False)
    out = tmp_path / "startup.json"
    assert main(["--repo", str(repo), "--runs", "1", "--json", str(out)]) == 0
    starts = json.loads(out.read_text())["starts"]
    assert [s["start"] for s in starts] == ["cold", "warm"]
    assert all(0 < s["ready_s"] < 120 and s["server_cpu_s"] > 0 for s in starts)
    assert main(["--repo", str(tmp_path / "missing")]) == 2
