"""Data-parallel training: two gloo processes on CPU end with identical weights (and rank 0's checkpoint)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganserve.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_two_ranks_end_with_identical_weights(tmp_path) -> None:
    out, data = tmp_path / "ddp", tmp_path / "photos"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # a small user folder keeps start-up short
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(data / f"{i}.png")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "training" / "ddp_worker.py"), str(out), "3", str(data)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    assert not torch.equal(r0["first_batch"], r1["first_batch"])  # each rank trained on its own crops
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["step"] == 3 and ck["metrics"]["world_size"] == 2
    for k in r0["state"]:
        assert torch.equal(ck["state"][k], r0["state"][k]), k
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in line for line in lines) == 3  # only rank 0 writes the log
