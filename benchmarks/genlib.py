"""The generative-model library measured: objectives on the 2-D ring and every digit model under one budget.

    flock /tmp/ganserve-cpu.lock .venv/bin/python -m ganserve.benchmarks.genlib --budget-minutes 2 --toy-steps 3000

Part 1 trains the ring-of-8-Gaussians GAN with each objective for the same number of generator updates (each with
its paper's recipe) and plots samples over training. Part 2 trains each digit model for the same wall-clock budget on
the same data, evaluates all of them with the same metrics (training.eval.gen_metrics), exports each generator to
ONNX and records the parity error, and draws sample grids, CVAE-GAN inpainting and AE-GAN interpolation. Writes
results.json, README.md (tables) and PNGs to --out (default benchmarks/results/genlib/); runs go to --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ganserve.benchmarks.peaks import cpu_info  # noqa: E402
from ganserve.training.data import digits_gen  # noqa: E402
from ganserve.training.data.toy import ring_centers  # noqa: E402
from ganserve.training.eval.gen_metrics import digits_metrics  # noqa: E402
from ganserve.training.applications.genbase import picture  # noqa: E402
from ganserve.training.applications.toygan import ToyRun, train_toy  # noqa: E402
from ganserve.training.runlog import write_json, write_png  # noqa: E402

# (objective, discriminator updates before the generator starts): the last two are the "D wins early" case
TOY_RUNS = (("minimax", 0), ("nonsaturating", 0), ("wgan", 0), ("wgan-gp", 0), ("minimax", 500),
            ("nonsaturating", 500))
# (label, registered model, config overrides): every digit model the library has, with its main variants
MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("dcgan", "dcgan", {}),
    ("dcgan-wgan-gp", "dcgan", {"objective": "wgan-gp"}),
    ("vae-bernoulli", "vae", {"decoder": "bernoulli"}),
    ("vae-gaussian", "vae", {"decoder": "gaussian"}),
    ("wae-mmd", "wae", {"penalty": "mmd"}),
    ("wae-gan", "wae", {"penalty": "gan"}),
    ("aegan", "aegan", {}),
    ("cvaegan", "cvaegan", {}),
)


# -- part 1: the ring ---------------------------------------------------------------------------------------------
def toy_part(steps: int, seed: int, out: Path) -> list[dict[str, Any]]:
    """Train each objective on the ring; plot samples at 5 points in training and G's gradient norm."""
    runs: list[ToyRun] = []
    for name, head_start in TOY_RUNS:
        print(f"[genlib] ring: {name}, D head start {head_start}, {steps} generator steps", flush=True)
        runs.append(train_toy(name, steps, seed=seed, snapshot_every=max(1, steps // 4), d_head_start=head_start))
    centers = ring_centers().numpy()
    cols = len(runs[0].snapshots)
    fig, axes = plt.subplots(len(runs), cols, figsize=(2.2 * cols, 2.2 * len(runs)), squeeze=False)
    for r, run in enumerate(runs):
        for c, snap in enumerate(run.snapshots):
            ax = axes[r][c]
            pts = snap.samples.numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
            ax.scatter(centers[:, 0], centers[:, 1], s=12, c="red", marker="x")
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"step {snap.step}: {snap.metrics['modes_covered']} modes", fontsize=8)
            if c == 0:
                ax.set_ylabel(_toy_label(run), fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "toy_samples.png", dpi=80)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for run in runs:
        ax.plot([s.step for s in run.snapshots], [s.g_grad_norm for s in run.snapshots], marker="o",
                label=_toy_label(run))
    ax.set_yscale("log")
    ax.set_xlabel("generator step")
    ax.set_ylabel("|grad of G's loss| (fixed noise)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "toy_generator_grad_norm.png", dpi=80)
    plt.close(fig)
    return [
        {"objective": run.objective, "d_head_start": run.d_head_start, "generator_steps": run.steps,
         "seconds": round(run.seconds, 1),
         "trajectory": [{"step": s.step, **s.metrics, "d_loss": s.d_loss, "g_loss": s.g_loss,
                         "g_grad_norm": s.g_grad_norm} for s in run.snapshots]}
        for run in runs
    ]


def _toy_label(run: ToyRun) -> str:
    return run.objective + (f" (D +{run.d_head_start})" if run.d_head_start else "")


# -- part 2: the digit models ----------------------------------------------------------------------------------------
def _export_parity(ckpt: Path, repo: Path, name: str) -> float:
    from ganserve.export.exporter import export_checkpoint, read_card

    version = export_checkpoint(ckpt, repo, name=name, overwrite=True)
    return float(read_card(version).parity["max_abs_error"])


def model_part(budget_minutes: float, image_size: int, seed: int, runs_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Train every model for the same budget, evaluate, export, and save its sample grid."""
    from ganserve.training.checkpoint import build_from_checkpoint
    from ganserve.training.trainer import train

    rows = []
    for label, model, overrides in MODELS:
        print(f"[genlib] {label}: {budget_minutes} min", flush=True)
        cfg = {**overrides, "image_size": image_size, "seed": seed, "eval_samples": 1000, "sample_every": 0,
               "ckpt_every": 0, "eval_every": 0, "log_every": 50}
        ckpt = train(model, cfg, budget_minutes=budget_minutes, out_dir=runs_dir / label, progress=False)
        app = build_from_checkpoint(ckpt)
        info = app.train_info
        write_png(out / f"samples_{label}.png", _big(app.sample_grid()))
        rows.append({"label": label, "model": model, "overrides": overrides, "steps": info["step"],
                     "seconds": info["metrics"]["elapsed_seconds"], "checkpoint": str(ckpt),
                     "parameters": sum(p.numel() for p in app.parameters()), **info["metrics"]["eval"]})
        if model == "cvaegan":
            write_png(out / "cvaegan_inpainting.png", _big(_inpainting(app, image_size)))
        if model == "aegan":
            write_png(out / "aegan_interpolation.png", _big(_interpolation(app, image_size)))
    for row in rows:  # after all training: onnxruntime's threads never compete with a timed run
        row["onnx_parity_max_abs"] = _export_parity(Path(row.pop("checkpoint")), runs_dir / "repo",
                                                    row["label"].replace("-", "_"))
    return rows


def _big(image: np.ndarray, factor: int = 3) -> np.ndarray:
    """Nearest-neighbour enlargement so 16 px digits are visible in a README."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def _inpainting(app: Any, size: int) -> np.ndarray:
    """Rows: held-out digit, with its lower half masked (grey), then x_hat after rounds 1, 2, 5 and 10."""
    x, y = digits_gen.digits(size, "test")
    idx = torch.arange(10) * 7
    x, y = x[idx], y[idx]
    mask = torch.zeros_like(x)
    mask[..., size // 2:, :] = 1.0
    rounds = app.inpaint(x, y, mask, rounds=10)
    shown = [x, mask * 0.5 + (1 - mask) * x, rounds[0], rounds[1], rounds[4], rounds[9]]
    return picture(torch.cat(shown), columns=10)


def _interpolation(app: Any, size: int) -> np.ndarray:
    """Each row: decoded codes on the line between two held-out digits of different classes (8 steps)."""
    x, y = digits_gen.digits(size, "test")
    rows = []
    for a, b in ((0, 1), (3, 8), (4, 9), (2, 7), (5, 6), (1, 7)):
        ia = int((y == a).nonzero()[0])
        ib = int((y == b).nonzero()[0])
        rows.append(app.interpolate(x[ia:ia + 1], x[ib:ib + 1], steps=8))
    return picture(torch.cat(rows), columns=8)


# -- report -----------------------------------------------------------------------------------------------------------
def _real_row(image_size: int) -> dict[str, Any]:
    """The same metrics on 1,000 real training digits: the floor every model is compared with."""
    x = digits_gen.digits(image_size, "train")[0][:1000]
    return {"label": "real training digits", **digits_metrics(x, image_size)}


def markdown(result: dict[str, Any]) -> str:
    """The README tables: ring objectives and digit models, with the machine and the command."""
    m = result["machine"]
    lines = [
        "# Generative-model library: measured",
        "",
        f"CPU: {m['cpu_model']} ({m['logical_cpus']} logical CPUs, torch threads {result['torch_threads']}). "
        f"Command: `{result['command']}`.",
        "",
        f"## Objectives on the ring of 8 Gaussians (same networks, {result['toy_steps']} generator steps each)",
        "",
        "Modes covered: modes holding >= 1% of 2,000 samples within 3 std (0.06) of their centre; high quality: "
        "fraction of samples within 3 std of any centre. Each objective uses its paper's optimiser recipe. "
        "\"D +500\": the discriminator first trains 500 steps against the initial generator (D wins early); "
        "‖∇G‖ is the norm of the generator loss's gradient on fixed noise at the first snapshot and at the end.",
        "",
        "| objective | recipe | modes covered (over training) | high-quality fraction (end) | ‖∇G‖ start → end | time |",
        "|---|---|---|---|---|---|",
    ]
    from ganserve.training.objectives import get_objective

    for row in result["toy"]:
        r = get_objective(row["objective"]).recipe
        recipe = f"{r.optimizer} {r.lr:g}, n_critic {r.n_critic}" + (f", clip {r.clip}" if r.clip else "") + (
            f", GP {r.gp_weight:g}" if r.gp_weight else "")
        traj = " → ".join(str(s["modes_covered"]) for s in row["trajectory"])
        t = row["trajectory"]
        name = row["objective"] + (f" (D +{row['d_head_start']})" if row.get("d_head_start") else "")
        lines.append(f"| {name} | {recipe} | {traj} | {t[-1]['high_quality_fraction']:.2f} | "
                     f"{t[0]['g_grad_norm']:.3g} → {t[-1]['g_grad_norm']:.3g} | {row['seconds']:.0f} s |")
    lines += [
        "",
        "![ring samples](toy_samples.png) ![generator gradient norm](toy_generator_grad_norm.png)",
        "",
        f"## Digit models ({result['budget_minutes']} min each, {result['image_size']} px digits, same data)",
        "",
        "Fréchet distance on the features of a small CNN trained on the digits' training split (test accuracy "
        f"{result['real']['classifier_test_accuracy']:.3f}) against the held-out digits — the FID formula on this "
        "project's classifier, **not** Inception FID, not comparable with published numbers. Classes covered: classes "
        "predicted for >= 2.5% of 1,000 samples. Class KL: KL(generated class histogram || uniform) in nats. "
        "Sharpness: mean |finite difference| of the samples / that of held-out digits.",
        "",
        "| model | Fréchet ↓ | classes covered | class KL ↓ | sharpness | steps | train time | ONNX parity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    real = result["real"]
    lines.append(f"| {real['label']} | {real['frechet']:.2f} | {real['classes_covered']} | {real['class_kl']:.3f} | "
                 f"{real['sharpness']:.2f} | – | – | – |")
    for row in result["models"]:
        lines.append(
            f"| {row['label']} | {row['frechet']:.2f} | {row['classes_covered']} | {row['class_kl']:.3f} | "
            f"{row['sharpness']:.2f} | {row['steps']} | {row['seconds']:.0f} s | {row['onnx_parity_max_abs']:.1e} |")
    lines += ["", "Samples (fixed noise; CVAE-GAN: one column per class 0–9):", ""]
    lines += [f"**{row['label']}**\n\n![{row['label']}](samples_{row['label']}.png)\n" for row in result["models"]]
    lines += [
        "CVAE-GAN inpainting (rows: held-out digit; lower half masked; x̂ after rounds 1, 2, 5, 10 of "
        "x̂ = M⊙G(E(x̂, c), c) + (1−M)⊙x):",
        "",
        "![inpainting](cvaegan_inpainting.png)",
        "",
        "AE-GAN latent interpolation between held-out digits (0→1, 3→8, 4→9, 2→7, 5→6, 1→7):",
        "",
        "![interpolation](aegan_interpolation.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=2.0, help="training time per digit model")
    parser.add_argument("--toy-steps", type=int, default=3000, help="generator steps per ring objective")
    parser.add_argument("--image-size", type=int, default=16, choices=digits_gen.SIZES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/genlib"))
    parser.add_argument("--runs", type=Path, default=Path("runs/genlib"))
    parser.add_argument("--skip-toy", action="store_true")
    parser.add_argument("--skip-models", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").is_file() else {}
    t0 = time.time()
    result: dict[str, Any] = {
        "machine": cpu_info(), "torch_threads": args.threads, "budget_minutes": args.budget_minutes,
        "toy_steps": args.toy_steps, "image_size": args.image_size, "seed": args.seed,
        "command": "python -m ganserve.benchmarks.genlib " + " ".join(argv if argv is not None else os.sys.argv[1:]),
    }
    if args.skip_toy:  # keep the previous run's ring results (and say how they were made)
        result["toy"], result["toy_steps"] = previous.get("toy", []), previous.get("toy_steps")
    else:
        result["toy"] = toy_part(args.toy_steps, args.seed, args.out)
    result["real"] = _real_row(args.image_size)
    if args.skip_models:
        result["models"], result["budget_minutes"] = previous.get("models", []), previous.get("budget_minutes")
    else:
        result["models"] = model_part(args.budget_minutes, args.image_size, args.seed, args.runs, args.out)
    result["wall_seconds"] = round(time.time() - t0, 1)
    write_json(args.out / "results.json", result)
    if result["toy"] and result["models"]:
        (args.out / "README.md").write_text(markdown(result))
    print(f"[genlib] wrote {args.out}/results.json and README.md in {result['wall_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
