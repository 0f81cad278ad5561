"""The main job's steps at tiny size, then `ganserve bench` on the repository it made (real server, real clients)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganserve.pipeline.cli import main
from ganserve.pipeline.demo import DemoConfig, run_demo
from ganserve.serving.client import ImageOptions, ImagesClient
from ganserve.serving.server import ServerThread
from ganserve.serving.tiling import plan_tiles
from ganserve.training.data.images import held_out_images
from local_server import chosen_runner, server_config
from rgb8 import nchw, png, to8


DIGITS = ["ssgan", "cvaegan"]  # shipped digit models: the classification and generation steps at full size


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoConfig, dict]:
    root = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(out=root / "out", repo=root / "repo", runs=root / "runs", tiny=True, examples=2,
                     models=["srresnet", *DIGITS])
    return cfg, run_demo(cfg)


def test_demo_writes_images_quality_and_latency(demo: tuple[DemoConfig, dict]) -> None:
    cfg, summary = demo
    assert set(summary["models"]) == {"srresnet", *DIGITS}
    sr = summary["models"]["srresnet"]
    assert sr["task"] == "super_resolution" and "trained now" in sr["origin"]
    assert len(sr["requests"]) == 2  # both held-out photos went through the server
    for r in sr["requests"]:
        assert r["output_size"] == [4 * r["input_size"][0], 4 * r["input_size"][1]]  # x4 model, cropped back exactly
        # the served pixels themselves are checked against the model in test_demo_sr_served_tiled_equals_untiled_onnx
        sheet = Image.open(r["side_by_side"])
        assert sheet.width == 4 * r["output_size"][1]  # input | bicubic | model | ground truth
        # both figures recomputed here by hand (BT.601 Y, 4-pixel border, range 255) from the sheet's own panels: the
        # reported PSNR is the model panel's against the truth and the baseline the bicubic panel's, not the reverse
        bicubic, model, truth = _panels(sheet, r["output_size"])[1:]
        assert r["psnr_y"] == pytest.approx(_psnr_y_by_hand(model, truth), abs=1e-9)
        assert r["baseline_psnr_y"] == pytest.approx(_psnr_y_by_hand(bicubic, truth), abs=1e-9)
        assert 20 < r["baseline_psnr_y"] < 50 and r["psnr_y"] != pytest.approx(r["baseline_psnr_y"], abs=1e-3)
    md = (cfg.out / "summary.md").read_text()
    assert "| srresnet | super_resolution |" in md and "## Latency: every image model" in md
    latency = json.loads((cfg.out / "latency" / "srresnet" / "results.json").read_text())
    assert {r["path"] for r in latency["results"]} >= {"torch-fp32", "ort-inprocess", "oip-raw", "image-api"}
    table = json.loads((cfg.out / "latency" / "summary.json").read_text())["rows"]
    assert [(r["model"], r["size"]) for r in table] == [("srresnet", 32)]  # the digit models are not image models
    one = {(r["path"], r["concurrency"]): r for r in latency["results"]}
    assert table[0]["added_c1_ms"] == pytest.approx(one[("oip-raw", 1)]["p50_ms"] - one[("ort-inprocess", 1)]["p50_ms"])
    assert table[0]["floor_c1_ms"] == one[("grpc-floor", 1)]["p50_ms"] > 0  # the transport floor beside it
    assert table[0]["served_vs_torch_fp32"] == pytest.approx(
        max(one[("oip-raw", 1)]["images_per_s"], one[("oip-raw", 4)]["images_per_s"])
        / one[("torch-fp32-cl", 1)]["images_per_s"])
    assert f"| srresnet | 32 | {latency['served_as']} |" in md and "(latency/srresnet/results.md)" in md


def _panels(sheet: Image.Image, size: list[int]) -> list[np.ndarray]:
    """The four equal panels of a side-by-side sheet, below its 16-pixel caption strip (ganserve.core.pictures)."""
    h, w = size
    pixels = np.asarray(sheet.convert("RGB"))
    assert pixels.shape == (16 + h, 4 * w, 3)
    return [pixels[16:, k * w:(k + 1) * w] for k in range(4)]


def _psnr_y_by_hand(pred: np.ndarray, truth: np.ndarray, border: int = 4) -> float:
    def luma(x: np.ndarray) -> np.ndarray:
        rgb = x.astype(np.float64) / 255.0
        return (16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2])[border:-border, border:-border]

    mse = np.mean((luma(pred) - luma(truth)) ** 2)
    return float(10.0 * np.log10(255.0 ** 2 / mse))


def test_demo_sr_served_tiled_equals_untiled_onnx(demo: tuple[DemoConfig, dict]) -> None:
    """The demo's trained SR model through SuperResolve with the server's default tiling (no per-request options,
    the card states no tile preference) equals its untiled in-process ONNX output within one grey level, on a
    held-out photo crop large enough to be cut into tiles (non-square, neither side a multiple of the tile)."""
    cfg, _ = demo
    image = np.ascontiguousarray(held_out_images(4)[0][100:300, 200:370])  # 200x170 HR photo pixels, never trained on
    server = ServerThread(server_config(cfg.repo))
    server.start()
    try:
        runner = chosen_runner(server, "srresnet")  # the server's provider and precision, whichever flavour is installed
        want = to8(runner.run({"lr": nchw(image)})["sr"]).astype(int)  # one untiled run of the whole crop
        tiling = server.config.images
        with ImagesClient(f"127.0.0.1:{server.port}", timeout=60) as client:
            tiled = client.super_resolve("srresnet", png(image))
            untiled = client.super_resolve("srresnet", png(image), ImageOptions(tile_size=0))
            seamed = client.super_resolve("srresnet", png(image), ImageOptions(tile_overlap=0))
    finally:
        server.stop()

    def pixels(reply) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(reply.image)).convert("RGB")).astype(int)

    assert tiled.tiles == len(plan_tiles(200, 170, tiling.tile_size, tiling.tile_overlap)) > 1 and untiled.tiles == 1
    assert pixels(tiled).shape == want.shape == (800, 680, 3)
    assert np.abs(pixels(tiled) - want).max() <= 1  # measured: max 1 on 900 of 1.6M values (blend rounding)
    np.testing.assert_array_equal(pixels(untiled), want)  # one run of the whole picture: the same pixels exactly
    assert np.abs(pixels(seamed) - want).max() > 1  # without overlap the cuts show (measured: max 34): the check bites


def test_demo_classifies_and_generates_through_the_server(demo: tuple[DemoConfig, dict]) -> None:
    cfg, summary = demo
    cls, gen = summary["models"]["ssgan"], summary["models"]["cvaegan"]
    assert cls["task"] == "classification" and "shipped" in cls["origin"]
    assert [r["label"] for r in cls["requests"]] == ["0", "1"]  # one held-out digit per class in turn
    assert all(r["predicted"] == r["label"] for r in cls["requests"])  # the shipped classifier gets these right
    assert gen["task"] == "generation" and [r["condition"] for r in gen["requests"]] == ["0", "1"]
    for r in cls["requests"] + gen["requests"]:
        assert r["request_ms"] > 0 and Image.open(r["side_by_side"]).height >= 192


def test_demo_second_run_reuses(demo: tuple[DemoConfig, dict], capsys: pytest.CaptureFixture) -> None:
    cfg, first = demo
    second = run_demo(cfg)
    out = capsys.readouterr().out
    assert "reused" in second["models"]["srresnet"]["origin"] and "already holds srresnet" in out
    assert "already holds ssgan" in out and "already holds cvaegan" in out
    assert {k: v["checkpoint"] for k, v in second["models"].items()} == {
        k: v["checkpoint"] for k, v in first["models"].items()}


def test_demo_refuses_an_unknown_model(tmp_path: Path) -> None:
    assert main(["demo", "--models", "nope", "--out", str(tmp_path / "o")]) == 2


def test_bench_report_is_well_formed(demo: tuple[DemoConfig, dict], tmp_path: Path) -> None:
    cfg, summary = demo
    out = tmp_path / "bench"
    rc = main(["bench", "--repo", str(cfg.repo), "--model", "srresnet", "--sizes", "16", "--batch", "1,2",
               "--concurrency", "1,2", "--requests", "3", "--checkpoint", summary["models"]["srresnet"]["checkpoint"], "--out", str(out),
               "--paths", "torch,ort,oip-raw,grpc-floor,image-api,tritonclient-aio,http-raw,http-image"])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    paths = {r["path"] for r in doc["results"]}
    assert paths >= {"torch-fp32", "torch-fp32-cl", "ort-inprocess", "oip-raw", "image-api", "tritonclient-aio",
                     "http-raw", "http-image"}
    floor = [r for r in doc["results"] if r["path"] == "grpc-floor"]
    assert [(r["size"], r["concurrency"], r["gflops_per_s"]) for r in floor] == [(16, 1, None)]
    for r in doc["results"]:
        assert r["requests"] >= 3 and r["errors"] == 0
        if r["path"] == "grpc-floor":
            continue
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_rps", "images_per_s", "gflops_per_s"):
            assert r[key] > 0, (r["path"], key)
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        if r["path"] in ("oip-raw", "image-api", "tritonclient-aio", "http-raw", "http-image"):
            assert r["peak_rss_mb"] > 0 and r["cpu_percent"] is not None
    assert doc["machine"]["matmul_peak_gflops"] > 0 and doc["gflop_per_image"]["16"] > 0
    rows = {(r["path"], r["batch"], r["concurrency"]): r for r in doc["results"]}
    ratios = {q["ratio"]: q for q in doc["ratios"]}
    added = ratios["p50 added by the server (ms, c1 b1)"]["value"]
    assert added == pytest.approx(rows[("oip-raw", 1, 1)]["p50_ms"] - rows[("ort-inprocess", 1, 1)]["p50_ms"])
    over_http = ratios["p50 added by the server over HTTP (ms, c1 b1)"]["value"]
    assert over_http == pytest.approx(rows[("http-raw", 1, 1)]["p50_ms"] - rows[("ort-inprocess", 1, 1)]["p50_ms"])
    assert ratios["HTTP / gRPC p50 (KServe v2, c1 b1)"]["value"] == pytest.approx(
        rows[("http-raw", 1, 1)]["p50_ms"] / rows[("oip-raw", 1, 1)]["p50_ms"])
    assert {(r["batch"], r["concurrency"]) for r in doc["results"] if r["path"] == "http-raw"} == {
        (1, 1), (1, 2), (2, 1), (2, 2)}
    beyond = ratios["p50 added by ganserve beyond the gRPC floor (ms, c1 b1)"]["value"]
    assert beyond == pytest.approx(added - floor[0]["p50_ms"])
    served_precision = doc["served_as"].split("/")[1]  # read from the server's ModelConfig parameters
    assert rows[("oip-raw", 1, 1)]["precision"] == served_precision and rows[("oip-raw", 1, 1)]["peak_of"]
    ort_best = max(r["images_per_s"] for r in doc["results"] if r["path"] == "ort-inprocess")
    torch_best = max(r["images_per_s"] for r in doc["results"] if r["path"].startswith("torch-"))
    assert ratios["ORT / best torch eager throughput"]["value"] == pytest.approx(ort_best / torch_best)
    md = (out / "results.md").read_text()
    assert "| ratio |" in md and doc["machine"]["cpu_model"] in md
    assert (out / "concurrency_16.png").stat().st_size > 1000


def test_bench_refuses_missing_repo(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--repo", str(tmp_path / "nope"), "--model", "x"]) == 2
    assert "not found" in capsys.readouterr().err
