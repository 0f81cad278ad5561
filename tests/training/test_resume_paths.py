"""Resume where runs really stop: SIGTERM in the middle of a cosine schedule with warm-up, a crash after a periodic
(ckpt_every) checkpoint, a budget-limited run resumed with the rest of its budget; each resumed run equals the
uninterrupted one bit for bit (weights, optimizer step, the learning rate logged at every step) where the run is
defined by steps. A checkpoint of another model or of another shape is refused with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import stoppable_app  # noqa: F401  (registers the test application)
from ganserve.core.errors import CheckpointError
from ganserve.pipeline.cli import main
from ganserve.training.checkpoint import load_checkpoint
from ganserve.training.schedule import lr_factor
from ganserve.training.trainer import train
from stoppable_app import NAME

HERE = Path(__file__).resolve().parent
TINY = {"generator": {"blocks": 1, "channels": 8}, "batch_size": 2, "lr_patch": 8, "log_every": 1, "eval_every": 0,
        "sample_every": 0, "ckpt_every": 0}
SCHEDULE = {**TINY, "lr_schedule": "cosine", "warmup_steps": 2, "lr_min_factor": 0.1}


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"] and sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        assert torch.equal(sa["state"][k], sb["state"][k]), k
    assert sa["optim"]["g"]["state"][0]["step"] == sb["optim"]["g"]["state"][0]["step"]
    for k, v in sa["optim"]["g"]["state"][0].items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb["optim"]["g"]["state"][0][k])), k


def _lrs(out: Path) -> dict[int, float]:
    """The learning rate logged at each step (the last line for a step run twice wins)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if r["kind"] == "train"}


@pytest.fixture(autouse=True)
def _no_stops(monkeypatch):
    monkeypatch.delenv("GANSERVE_TEST_SIGTERM_AT", raising=False)
    monkeypatch.delenv("GANSERVE_TEST_CRASH_AT", raising=False)


def test_sigterm_mid_schedule_then_resume_equals_one_run(tmp_path, monkeypatch) -> None:
    whole = train(NAME, SCHEDULE, steps=6, out_dir=tmp_path / "whole", progress=False)
    monkeypatch.setenv("GANSERVE_TEST_SIGTERM_AT", "2")
    with pytest.raises(KeyboardInterrupt):
        train(NAME, SCHEDULE, steps=6, out_dir=tmp_path / "split", progress=False)
    stopped = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert stopped["step"] == 3 and stopped["metrics"]["interrupted"] is True
    monkeypatch.delenv("GANSERVE_TEST_SIGTERM_AT")
    split = train(NAME, {}, steps=6, out_dir=tmp_path / "split", resume=True, progress=False)
    _same_weights(whole, split)
    assert load_checkpoint(split)["metrics"]["interrupted"] is False
    lrs = _lrs(tmp_path / "whole")
    assert _lrs(tmp_path / "split") == lrs  # warm-up and cosine continue where they were, not from the start
    base = lrs[3] / lr_factor("cosine", 2 / 6, 2, 2, 0.1)
    assert [lrs[s] for s in range(1, 7)] == pytest.approx(
        [base * lr_factor("cosine", (s - 1) / 6, s - 1, 2, 0.1) for s in range(1, 7)], rel=1e-9)
    assert lrs[1] < lrs[2] and all(lrs[s] > lrs[s + 1] for s in range(2, 6))  # warm-up, then the decay


def _train_cli(tmp_path: Path, out: Path, *extra: str, crash_at: int | None = None) -> subprocess.CompletedProcess:
    """`ganserve train` of the test application in a fresh interpreter (one torch thread, as in these tests)."""
    env = {**os.environ, "GANSERVE_PLUGINS": "stoppable_app", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("GANSERVE_TEST_SIGTERM_AT", None)
    env.pop("GANSERVE_TEST_CRASH_AT", None)
    if crash_at is not None:
        env["GANSERVE_TEST_CRASH_AT"] = str(crash_at)
    return subprocess.run([sys.executable, "-m", "ganserve.pipeline.cli", "train", NAME, "--steps", "6", "--out",
                           str(out), "--no-progress", *extra], env=env, capture_output=True, text=True, timeout=300)


def test_crash_after_a_periodic_checkpoint_then_resume_equals_one_run(tmp_path) -> None:
    """Every run in its own fresh process (the same settings for each), so the comparison is of the resume alone."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**TINY, "ckpt_every": 2}))
    whole = _train_cli(tmp_path, tmp_path / "whole", "--config", str(cfg))
    assert whole.returncode == 0, whole.stderr[-2000:]
    crashed = _train_cli(tmp_path, tmp_path / "split", "--config", str(cfg), crash_at=5)
    assert crashed.returncode == 137, crashed.stderr[-2000:]  # gone during step 6, with no chance to save
    periodic = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert periodic["step"] == 4 and periodic["metrics"]["interrupted"] is False
    resumed = _train_cli(tmp_path, tmp_path / "split", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _same_weights(tmp_path / "whole" / "checkpoint.pt", tmp_path / "split" / "checkpoint.pt")


def test_a_budget_run_resumes_with_the_rest_of_its_budget(tmp_path) -> None:
    """A run of 6 s resumed with a 12 s budget trains about 6 s more, not 12: the budget counts the whole training."""
    cfg = {**TINY, "lr_schedule": "cosine"}
    train(NAME, cfg, budget_minutes=0.1, out_dir=tmp_path / "run", progress=False)
    before = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["metrics"]["elapsed_seconds"]
    first_lr, steps_before = _lrs(tmp_path / "run")[1], max(_lrs(tmp_path / "run"))
    t0 = time.monotonic()
    ckpt = train(NAME, {}, budget_minutes=0.2, out_dir=tmp_path / "run", resume=True, progress=False)
    resumed_s = time.monotonic() - t0
    payload = load_checkpoint(ckpt)
    lrs = _lrs(tmp_path / "run")
    assert 6.0 <= before < 12.0 <= payload["metrics"]["elapsed_seconds"]
    # about 12 - before seconds of training (plus one step, the final evaluation and the save); a second full
    # budget would be 12 s or more
    assert resumed_s < 12.0 - before / 2, (resumed_s, before)
    base = payload["config"]["lr"]
    # the schedule goes on from the elapsed time (at least `before` of 12 s); one restarted at the resume would be
    # back at the top, above this bound
    assert first_lr <= base
    assert lrs[steps_before + 1] <= base * lr_factor("cosine", before / 12.0, steps_before) + 1e-12
    later = sorted(s for s in lrs if s > steps_before)
    assert all(lrs[a] >= lrs[b] for a, b in zip(later, later[1:]))  # cosine only decays after the resume


def test_a_checkpoint_of_another_model_or_shape_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    train(NAME, TINY, steps=1, out_dir=out, progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=f"holds model '{NAME}', not 'srresnet'"):
        train("srresnet", {}, steps=2, out_dir=out, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="does not fit this config"):
        train(NAME, {"generator": {"channels": 16}}, steps=2, out_dir=out, resume=True, progress=False)
    (tmp_path / "deeper.json").write_text(json.dumps({"generator": {"blocks": 2}}))
    capsys.readouterr()
    assert main(["train", NAME, "--steps", "2", "--out", str(out), "--resume", "--config",
                 str(tmp_path / "deeper.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this config" in err[0], err
    assert (out / "checkpoint.pt").read_bytes() == before  # the refused resumes left the checkpoint as it was


def test_ema_weights_survive_a_resume(tmp_path) -> None:
    """Face aging with ema_decay: the moving average (what is evaluated and exported) resumes bit for bit too."""
    cfg = {"g_channels": 8, "g_blocks": 1, "d_channels": 8, "batch_size": 4, "eval_identities": 3,
           "train_identities": 6, "renders_per_identity": 2, "log_every": 1, "sample_every": 0, "ckpt_every": 0,
           "eval_every": 0, "age_judge": "", "id_judge": "", "loss_net": "", "id_weight": 0.0, "age_weight": 0.0,
           "ema_decay": 0.5}
    whole = train("face-aging", cfg, steps=4, out_dir=tmp_path / "whole", progress=False)
    train("face-aging", cfg, steps=2, out_dir=tmp_path / "split", progress=False)
    split = train("face-aging", {}, steps=4, out_dir=tmp_path / "split", resume=True, progress=False)
    state, resumed = load_checkpoint(whole)["state"], load_checkpoint(split)["state"]
    averaged = [k for k in state if k.startswith("ema.")]
    assert averaged and state.keys() == resumed.keys()
    assert all(torch.equal(state[k], resumed[k]) for k in state)
    # the average is a state of its own (it lags the live generator), so equality above is not the generator's twice
    assert any(not torch.equal(state[k], state["generator." + k[4:]]) for k in averaged if "generator." + k[4:] in state)
