"""The bench's issue-14 rows: every candidate with its reference check, the two thread modes, the codec table."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ganserve.benchmarks import inprocess
from ganserve.core.contract import CARD_FILE, ModelCard
from test_precision import fast, write_model


def test_candidate_rows_carry_the_servers_quality_verdict(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "ident", fast(0.98))
    runs, notes = inprocess.candidate_runs(folder / "1", ModelCard.load(folder / CARD_FILE), threads=1, providers=["cpu"])
    by = {r.label: r for r in runs}
    assert by["ort-cpu-fp32"].passed and not by["ort-cpu-int8"].passed
    assert "drop +" in by["ort-cpu-int8"].quality
    assert any("CPUExecutionProvider/bf16" in n for n in notes)
    rows = []
    feeds = lambda size, batch: {"x": np.full((batch, 3, size, size), 0.5, np.float32)}  # noqa: E731
    inprocess.time_candidates(runs, feeds, [16], [1], {"requests": 3, "duration": None}, rows.append)
    assert [r.path for r in rows] == ["ort-cpu-fp32", "ort-cpu-int8"] and all(r.requests == 3 for r in rows)
    assert rows[1].extra == {"quality": by["ort-cpu-int8"].quality, "passed": False}
    modes = []
    inprocess.time_modes(by["ort-cpu-fp32"], feeds(16, 1), 16, 2, [1, 4], {"requests": 4, "duration": None}, modes.append)
    assert [(r.path, r.concurrency, r.extra["streams"]) for r in modes] == [
        ("ort-cpu-fp32-latency", 1, 1), ("ort-cpu-fp32-latency", 4, 1),
        ("ort-cpu-fp32-throughput", 1, 2), ("ort-cpu-fp32-throughput", 4, 2)]
    assert all(r.errors == 0 and r.requests >= 4 for r in modes)


def test_codec_table_round_trips_lossless_codecs() -> None:
    ramp = np.linspace(0, 255, 40, dtype=np.float32)
    image = np.stack([np.tile(ramp, (48, 1)), np.tile(ramp[::-1], (48, 1)), np.full((48, 40), 128.0)], -1).astype(np.uint8)
    table = {row["codec"]: row for row in inprocess.codec_table(image, repeats=1)}
    assert set(table) >= {"PNG level 1", "PNG level 6", "JPEG q90", "WebP lossless (method 0)"}
    assert all(row["bytes"] > 0 and row["encode_ms"] > 0 for row in table.values())
    assert table["PNG level 0"]["bytes"] > table["PNG level 9"]["bytes"]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    assert np.array_equal(np.asarray(Image.open(buf)), image)
