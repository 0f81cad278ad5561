"""A new application needs one module: a conditioned denoiser defined here and nowhere else goes through every stage.

The module holds the network, the config and the application. `ganserve` loads it as a plugin (GANSERVE_PLUGINS
names it; tests/e2e is put on PYTHONPATH). The tests then run the real commands, each in its own process: train a
few steps, ship into a temporary models folder, export, serve, call through Transform (the generic image RPC)
and `ganserve client transform`, bench, and `ganserve demo`. No other file in the repository knows the task.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ganserve.core.contract import TensorSpec
from ganserve.core.export_spec import ExportSpec
from ganserve.core.image_metrics import psnr_rgb, to_uint8
from ganserve.core.pictures import picture_grid, png_bytes
from ganserve.training.application import Application, DemoExample
from ganserve.training.config import CommonConfig
from ganserve.training.networks import build_network, describe_network, register_network
from ganserve.training.registry import register_model

MODEL = "test-denoiser"
NETWORK = "test-conditioned-denoiser"
LEVELS = ("light", "heavy")  # the condition's choices: how much noise the request's image carries
SIGMA = {"light": 0.04, "heavy": 0.16}


# -- the network ------------------------------------------------------------------------------------------------
class ConditionedDenoiser(nn.Module):
    """Residual denoiser: the image plus a one-hot noise level (broadcast to planes) in, a cleaned image out."""

    def __init__(self, features: int = 12, levels: int = len(LEVELS)) -> None:
        super().__init__()
        self.features, self.levels = features, levels
        self.body = nn.Sequential(nn.Conv2d(3 + levels, features, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(features, features, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(features, 3, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)  # starts as the identity: the noisy input is the first answer
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, image: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        planes = level[:, :, None, None] * torch.ones_like(image[:, :1])
        return (image + self.body(torch.cat([image, planes], 1))).clamp(0.0, 1.0)

    def describe(self) -> str:
        return f"{NETWORK}: 3 convs x {self.features} features, {self.levels} noise levels"


# -- data: procedural pictures, noise of a chosen level -----------------------------------------------------------
def clean_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth colour pictures: random low-resolution colours upsampled bilinearly (n x 3 x size x size in [0, 1])."""
    coarse = torch.rand(n, 3, 4, 4, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def noisy_batch(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy, one-hot level, clean) for ``n`` pictures, levels alternating, all from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    clean = clean_images(n, size, gen)
    index = torch.arange(n) % len(LEVELS)
    sigma = torch.tensor([SIGMA[LEVELS[i]] for i in index])[:, None, None, None]
    noisy = (clean + sigma * torch.randn(clean.shape, generator=gen)).clamp(0.0, 1.0)
    return noisy, F.one_hot(index, len(LEVELS)).float(), clean


HELD_OUT_SEED = 90_001  # never a training seed (those are config seed * 1000 + step)


# -- the application -----------------------------------------------------------------------------------------------
@dataclass
class DenoiserConfig(CommonConfig):
    """The denoiser's settings: its network by name, the training crop, the optimizer."""

    network: dict = field(default_factory=lambda: {"type": NETWORK, "features": 12})
    crop: int = 32
    batch_size: int = 8
    lr: float = 3e-3
    eval_every: int = 0
    sample_every: int = 0
    ckpt_every: int = 0


class DenoiserInference(nn.Module):
    """What the export traces: (image, level) -> denoised."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.net(image, noise)


class DenoiserApp(Application):
    """L1 training of a conditioned denoiser; held-out PSNR against the noisy input."""

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__(config)
        self.net = build_network(config.network, "network", levels=len(LEVELS))

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.adam(self.net, self.config.lr)}

    def make_batch(self, step: int, rank: int, world_size: int) -> Any:
        return noisy_batch(self.config.batch_size, self.config.crop, self.config.seed * 1000 + step * world_size + rank)

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        noisy, level, clean = (t.to(self.device) for t in batch)
        loss = F.l1_loss(self.net(noisy, level), clean)
        self.optimize("g", loss)
        return {"loss_l1": float(loss.detach())}

    def _held_out(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        noisy, level, clean = noisy_batch(8, 48, HELD_OUT_SEED)
        return noisy.numpy(), level.numpy(), clean.numpy()

    def evaluate_predictor(self, predict: Any) -> dict[str, float]:
        """Mean held-out PSNR of ``predict(noisy, level)`` and of the noisy input itself (the baseline)."""
        noisy, level, clean = self._held_out()
        out = predict(noisy, level)
        return {"psnr": float(np.mean([psnr_rgb(o, c, channel_axis=0) for o, c in zip(out, clean)])),
                "noisy_psnr": float(np.mean([psnr_rgb(n, c, channel_axis=0) for n, c in zip(noisy, clean)]))}

    @torch.no_grad()
    def _predict(self, noisy: np.ndarray, level: np.ndarray) -> np.ndarray:
        return self.net.eval()(torch.from_numpy(noisy), torch.from_numpy(level)).numpy()

    def evaluate(self) -> dict[str, float]:
        return self.evaluate_predictor(self._predict)

    def sample_grid(self) -> np.ndarray:
        noisy, level, clean = self._held_out()
        return picture_grid([noisy[:4], self._predict(noisy[:4], level[:4]), clean[:4]])

    def demo_examples(self, count: int) -> list[DemoExample]:
        noisy, level, clean = self._held_out()
        return [DemoExample(name=f"held_out_{i}_{LEVELS[int(level[i].argmax())]}",
                            image=to_uint8(noisy[i].transpose(1, 2, 0)), truth=to_uint8(clean[i].transpose(1, 2, 0)),
                            condition=LEVELS[int(level[i].argmax())]) for i in range(min(count, len(noisy)))]

    def export_spec(self) -> ExportSpec:
        noisy, level, clean = self._held_out()
        module = DenoiserInference(copy.deepcopy(self.net).cpu().eval()).eval()
        return ExportSpec(
            module=module,
            example_inputs=(torch.from_numpy(noisy[:1, :, :32, :32].copy()), torch.from_numpy(level[:1])),
            inputs=[TensorSpec("image", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0]),
                    TensorSpec("noise", [len(LEVELS)], "FP32", "condition", "NC", [0.0, 1.0], list(LEVELS))],
            outputs=[TensorSpec("denoised", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            task="denoise",
            architecture=describe_network(self.net),
            parity_inputs=[{"image": noisy[:2, :, :32, :32].copy(), "noise": level[:2]},
                           {"image": noisy[2:4, :, :48, :40].copy(), "noise": level[2:4]}],
            reference_targets=[{"denoised": clean[:2, :, :32, :32].copy()}, {"denoised": clean[2:4, :, :48, :40].copy()}],
            evaluate=lambda predictor: self.evaluate_predictor(
                lambda x, c: predictor({"image": x, "noise": c})["denoised"]),
            quality_key="psnr",
            card_extra=self.card_facts("RGB in [0, 1] in and out", "procedural smooth pictures with Gaussian noise",
                                       levels={k: SIGMA[k] for k in LEVELS}),
        )


# pytest imports this module as well; the registry is filled only where ganserve loads it as its plugin, so the
# suite's own registry (which other tests enumerate) stays as it is.
if __name__ in os.environ.get("GANSERVE_PLUGINS", "").split(","):
    register_network(NETWORK)(ConditionedDenoiser)
    register_model(MODEL, DenoiserConfig)(DenoiserApp)


# -- the tests: every stage through the real commands ----------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


def ganserve(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`ganserve ARGS` in a fresh process that loads this module as a plugin."""
    env = {**os.environ, "GANSERVE_PLUGINS": Path(__file__).stem,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "ganserve.pipeline.cli", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"ganserve {' '.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train, ship and export the denoiser once; the paths each later test reads."""
    root = tmp_path_factory.mktemp("new-app")
    ganserve("train", MODEL, "--steps", "60", "--out", str(root / "run"), "--no-progress", cwd=root)
    ckpt = root / "run" / "checkpoint.pt"
    ganserve("ship", str(ckpt), "--name", "denoiser", "--models-dir", str(root / "models"),
             "--command", f"ganserve train {MODEL} --steps 60", "--target", "beat the noisy input", cwd=root)
    ganserve("export", str(root / "models" / "denoiser"), "--repo", str(root / "repo"), "--quiet", cwd=root)
    return {"root": root, "checkpoint": ckpt, "models": root / "models", "repo": root / "repo"}


def test_trained_shipped_and_exported_by_the_stock_commands(pipeline: dict[str, Path]) -> None:
    record = json.loads((pipeline["models"] / "denoiser" / "training_record.json").read_text())
    assert record["model"] == MODEL and record["quality_key"] == "psnr"
    assert record["held_out"]["psnr"] > record["held_out"]["noisy_psnr"]  # 60 steps already beat the noisy input
    card = json.loads((pipeline["repo"] / "denoiser" / "model_card.json").read_text())
    assert card["task"] == "denoise" and card["architecture"].startswith(NETWORK)
    assert [(t["name"], t["role"]) for t in card["inputs"]] == [("image", "image"), ("noise", "condition")]
    assert card["inputs"][1]["labels"] == list(LEVELS)
    assert card["parity"]["max_abs_error"] < 1e-4
    assert card["metrics"]["psnr"] == pytest.approx(record["held_out"]["psnr"], abs=1e-3)


def _served_pixels(client: Any, picture: np.ndarray, level: str) -> np.ndarray:
    reply = client.transform("denoiser", png_bytes(picture), conditions={"noise": level})
    return np.asarray(Image.open(io.BytesIO(reply.image)).convert("RGB"))


def test_served_through_the_generic_rpc_and_the_client(pipeline: dict[str, Path]) -> None:
    """Transform with each noise level equals the exported network run in-process; the CLI verb writes the same."""
    from ganserve.serving.client import ImagesClient
    from ganserve.serving.server import ServerThread
    from local_server import chosen_runner, server_config

    noisy, _, _ = noisy_batch(2, 40, 7)
    picture = to_uint8(noisy[1].numpy().transpose(1, 2, 0))
    server = ServerThread(server_config(pipeline["repo"]))
    server.start()
    try:
        session = chosen_runner(server, "denoiser")
        with ImagesClient(f"127.0.0.1:{server.port}") as client:
            info = {m.name: m for m in client.list_models().models}["denoiser"]
            assert [(c.name, list(c.choices)) for c in info.conditions] == [("noise", list(LEVELS))]
            assert info.rpc == "Transform"
            outputs = {}
            for i, name in enumerate(LEVELS):
                served = _served_pixels(client, picture, name)
                onehot = np.eye(len(LEVELS), dtype=np.float32)[i:i + 1]
                x = (picture.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
                local = to_uint8(session.run({"image": x, "noise": onehot})["denoised"][0].transpose(1, 2, 0))
                assert np.abs(served.astype(int) - local.astype(int)).max() <= 1
                outputs[name] = served
            assert np.abs(outputs["light"].astype(int) - outputs["heavy"].astype(int)).max() > 0  # the level matters
            source = pipeline["root"] / "noisy.png"
            source.write_bytes(png_bytes(picture))
            out = pipeline["root"] / "denoised.png"
            ganserve("client", "--server", f"127.0.0.1:{server.port}", "transform", str(source), str(out),
                     "--model", "denoiser", "--condition", "noise=heavy", cwd=pipeline["root"])
            assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), outputs["heavy"])
    finally:
        server.stop()


def test_benched_and_run_by_the_main_job(pipeline: dict[str, Path]) -> None:
    root = pipeline["root"]
    ganserve("bench", "--repo", str(pipeline["repo"]), "--model", "denoiser", "--sizes", "32", "--batch", "1",
             "--concurrency", "1", "--requests", "3", "--paths", "torch,ort,oip-raw,image-api",
             "--checkpoint", str(pipeline["checkpoint"]), "--out", str(root / "bench"), cwd=root)
    results = json.loads((root / "bench" / "results.json").read_text())
    paths = {r["path"] for r in results["results"]}
    assert {"oip-raw", "image-api", "ort-inprocess"} <= paths and any(p.startswith("torch") for p in paths)
    assert all(r["p50_ms"] > 0 and r["errors"] == 0 for r in results["results"])
    ganserve("demo", "--shipped", str(pipeline["models"]), "--models", "denoiser", "--repo", str(root / "demo-repo"),
             "--out", str(root / "demo"), "--examples", "2", "--bench-requests", "2", cwd=root)
    summary = json.loads((root / "demo" / "summary.json").read_text())
    rows = summary["models"]["denoiser"]["requests"]
    assert [r["condition"] for r in rows] == ["light", "heavy"]
    assert all(r["psnr_y"] > r["baseline_psnr_y"] for r in rows)  # model above the noisy input, per example
    assert len(list((root / "demo" / "denoiser").glob("*.png"))) == 2
