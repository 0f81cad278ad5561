"""The precision table: three exports of one checkpoint, measured and printed as Markdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganserve.export import bench_precisions


def test_table_for_tiny_upsampler(upsampler_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = bench_precisions.main([str(upsampler_ckpt), "--sizes", "16", "24", "--repeats", "3", "--quiet",
                                "--repo", str(tmp_path / "repo")])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"tiny-upsampler-x2, onnxruntime CPU provider, batch 1, on {bench_precisions.cpu_model()}:"
    assert lines[2].startswith("| precision | max abs error vs torch | held-out psnr | Δ vs fp32 | model.onnx |")
    rows = [line.split(" | ") for line in lines[4:7]]
    assert [r[0] for r in rows] == ["| fp32", "| fp16", "| int8"]
    assert float(rows[0][1]) <= 1e-4 and rows[0][3] == "+0.000"
    assert all(r[-1].endswith("(3 runs) |") and float(r[-1].split()[0]) > 0 for r in rows)
    assert sorted(p.name for p in (tmp_path / "repo" / "bench").iterdir()) == ["1", "2", "3", "config.pbtxt", "model_card.json"]
    assert "Baselines: bicubic_psnr" in out


def test_fixed_size_model_is_timed_at_its_own_size_only(classifier_ckpt: Path, tmp_path: Path) -> None:
    rows = bench_precisions.bench(classifier_ckpt, tmp_path / "repo", [8, 64], repeats=2, progress=False)
    assert [r["p50_64"] for r in rows] == [None] * 3
    assert all(r["p50_8"][1] == 2 and r["p50_8"][0] > 0 for r in rows)
    assert "| n/a |" in bench_precisions.markdown(rows, [8, 64], "cpu")


def test_missing_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert bench_precisions.main([str(tmp_path / "nope.pt"), "--quiet"]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
