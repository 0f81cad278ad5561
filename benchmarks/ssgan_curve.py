"""Held-out accuracy against the number of labels: the semi-supervised GAN, its supervised-only baseline (the same
classifier and steps on the labelled images alone) and an RBF SVM on the same labelled images, over seeds.

    python -m ganserve.benchmarks.ssgan_curve --per-class 2,5,10,20 --seeds 0,1,2 --steps 3000 [--holdout validation] \
        [--set key=value ...] [--out benchmarks/results/ssgan]

Every run trains through the normal trainer (`ganserve train ssgan`) into a temporary folder. Writes results.json
(every run, the summary, summed confusion matrices, machine), results.md and curve.png under --out, rewritten
after each run so an interrupted sweep keeps what it measured. ``--holdout validation`` evaluates on a split
carved from the training pool: use it to tune, and the test split only for the final figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = {"ssgan": {"gan": True}, "baseline": {"gan": False}}
TITLES = {"ssgan": "SSL-GAN", "baseline": "same classifier, labels only", "svm": "RBF SVM, labels only"}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def train_run(method: str, per_class: int, seed: int, steps: int, overrides: dict[str, Any], work: Path) -> dict[str, Any]:
    """Train one configuration and return its held-out figures, confusion matrix and wall time."""
    from ganserve.training.checkpoint import load_checkpoint
    from ganserve.training.trainer import train

    config = {**overrides, **METHODS[method], "labels_per_class": per_class, "seed": seed,
              "eval_every": 0, "sample_every": 0, "ckpt_every": 0}
    t0 = time.perf_counter()
    ckpt = train("ssgan", config, steps=steps, out_dir=work / f"{method}_{per_class}_{seed}", progress=False)
    metrics = load_checkpoint(ckpt)["metrics"]
    return {
        "method": method, "per_class": per_class, "labels": metrics["data"]["labeled"], "seed": seed, "steps": steps,
        "accuracy": metrics["eval"]["accuracy"], "mean_class_recall": metrics["eval"]["mean_class_recall"],
        "held_out": metrics["evaluated_on"], "held_out_images": metrics["data"]["held_out_images"],
        "unlabeled": metrics["data"]["unlabeled"], "confusion_matrix": metrics["confusion_matrix"],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def svm_run(per_class: int, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """An RBF SVM (scikit-learn defaults) on the same labelled images, scored on the same held-out split."""
    from sklearn.svm import SVC

    from ganserve.training.data.digits import semi_supervised_split
    from ganserve.training.applications.ssgan_eval import confusion_matrix

    split = semi_supervised_split(overrides.get("data_dir", ""), per_class, seed, overrides.get("holdout", "test"))
    t0 = time.perf_counter()
    model = SVC(kernel="rbf", gamma="scale").fit(split.labeled.images.reshape(len(split.labeled.labels), -1),
                                                 split.labeled.labels)
    predicted = model.predict(split.held_out.images.reshape(len(split.held_out.labels), -1))
    matrix = confusion_matrix(predicted, split.held_out.labels, split.classes)
    return {
        "method": "svm", "per_class": per_class, "labels": len(split.labeled.labels), "seed": seed, "steps": 0,
        "accuracy": float(np.mean(predicted == split.held_out.labels)), "held_out": split.held_out_name,
        "held_out_images": len(split.held_out.labels), "confusion_matrix": matrix.tolist(),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (sample) std of accuracy per (method, labels), with the gain of SSL-GAN over its baseline."""
    rows = []
    for method in ("ssgan", "baseline", "svm"):
        for labels in sorted({r["labels"] for r in runs}):
            acc = [r["accuracy"] for r in runs if r["method"] == method and r["labels"] == labels]
            if acc:
                secs = [r["seconds"] for r in runs if r["method"] == method and r["labels"] == labels]
                rows.append({"method": method, "labels": labels, "seeds": len(acc), "mean": float(np.mean(acc)),
                             "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                             "min": float(np.min(acc)), "max": float(np.max(acc)), "seconds_mean": float(np.mean(secs))})
    return rows


def _cell(summary: list[dict[str, Any]], method: str, labels: int) -> dict[str, Any] | None:
    return next((r for r in summary if r["method"] == method and r["labels"] == labels), None)


def _pct(row: dict[str, Any] | None) -> str:
    return "–" if row is None else f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}"


def _matrix_md(matrix: list[list[int]]) -> list[str]:
    k = len(matrix)
    lines = ["| true \\ predicted | " + " | ".join(str(i) for i in range(k)) + " |", "|---" * (k + 1) + "|"]
    lines += [f"| **{i}** | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(matrix)]
    return lines


def summed_confusion(runs: list[dict[str, Any]], method: str, labels: int) -> list[list[int]] | None:
    """Confusion matrices of one (method, labels) summed over seeds."""
    mats = [np.array(r["confusion_matrix"]) for r in runs if r["method"] == method and r["labels"] == labels]
    return np.sum(mats, axis=0).tolist() if mats else None


def markdown(doc: dict[str, Any]) -> str:
    """The summary table, the 100-label confusion matrices and how the figures were made."""
    summary, runs = doc["summary"], doc["runs"]
    held = runs[0]["held_out"] if runs else "test"
    lines = [
        f"# Semi-supervised GAN on the digits: {held} accuracy (%) against the number of labels",
        "",
        f"Mean ± std over seeds {doc['seeds']}; {doc['steps']} training steps per run; held-out split: {held} "
        f"({runs[0]['held_out_images'] if runs else '?'} images). CPU: {doc['machine'].get('cpu_model')}.",
        "",
        "| labels | SSL-GAN | same classifier, labels only | gain (points) | RBF SVM, labels only | s / GAN run |",
        "|---|---|---|---|---|---|",
    ]
    for labels in sorted({r["labels"] for r in summary}):
        gan, base, svm = (_cell(summary, m, labels) for m in ("ssgan", "baseline", "svm"))
        gain = f"{100 * (gan['mean'] - base['mean']):+.1f}" if gan and base else "–"
        secs = f"{gan['seconds_mean']:.0f}" if gan else "–"
        lines.append(f"| {labels} | {_pct(gan)} | {_pct(base)} | {gain} | {_pct(svm)} | {secs} |")
    for method in ("ssgan", "baseline"):
        matrix = summed_confusion(runs, method, 100)
        if matrix is not None:
            lines += ["", f"Confusion matrix, {TITLES[method]}, 100 labels (summed over seeds):", ""] + _matrix_md(matrix)
    lines += ["", f"Command: `{doc['command']}`", f"Config overrides: `{json.dumps(doc['overrides'])}`", ""]
    return "\n".join(lines)


def chart(doc: dict[str, Any], path: Path) -> None:
    """Accuracy against labels (log x), one line per method with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in ("ssgan", "baseline", "svm"):
        rows = [r for r in doc["summary"] if r["method"] == method]
        if rows:
            ax.errorbar([r["labels"] for r in rows], [100 * r["mean"] for r in rows],
                        yerr=[100 * r["std"] for r in rows], marker="o", capsize=3, label=TITLES[method])
    ax.set_xscale("log")
    labels = sorted({r["labels"] for r in doc["summary"]})
    ax.set_xticks(labels, [str(v) for v in labels])
    ax.set_xlabel("labelled images")
    ax.set_ylabel(f"{doc['runs'][0]['held_out'] if doc['runs'] else 'test'} accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_results(doc: dict[str, Any], out: Path) -> None:
    """results.json, results.md and curve.png, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    doc["summary"] = summarise(doc["runs"])
    _atomic_write(out / "results.json", json.dumps(doc, indent=1).encode())
    _atomic_write(out / "results.md", markdown(doc).encode())
    if doc["summary"]:
        chart(doc, out / "curve.png")


def merge(paths: list[str], out: Path) -> int:
    """One report from several results.json files of the same recipe (e.g. label counts run in parallel)."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    recipes = {json.dumps([d["steps"], d["overrides"]], sort_keys=True) for d in docs}
    if len(recipes) != 1:
        raise SystemExit(f"ssgan_curve: --merge needs runs of one recipe (steps, overrides); got {sorted(recipes)}")
    doc = {**docs[0], "command": " + ".join(d["command"] for d in docs),
           "seeds": sorted({s for d in docs for s in d["seeds"]}), "runs": [r for d in docs for r in d["runs"]]}
    write_results(doc, out)
    print(markdown(doc))
    return 0


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise SystemExit(f"ssgan_curve: {what} must be comma-separated non-negative integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.ssgan_curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", default="2,5,10,20", help="labels per class (x10 classes on the digits)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--methods", default="ssgan,baseline,svm", help="any of ssgan, baseline, svm")
    parser.add_argument("--holdout", choices=("test", "validation"), default="test")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="ssgan config override")
    parser.add_argument("--out", default="benchmarks/results/ssgan")
    parser.add_argument("--merge", nargs="+", metavar="RESULTS_JSON",
                        help="train nothing: combine the runs of sweeps run side by side (same steps) into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))

    from ganserve.benchmarks.peaks import cpu_info
    from ganserve.training.config import parse_set

    per_class, seeds = _ints(args.per_class, "--per-class"), _ints(args.seeds, "--seeds")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - {*METHODS, "svm"})
    if unknown:
        raise SystemExit(f"ssgan_curve: unknown method(s) {unknown}; use ssgan, baseline, svm")
    overrides: dict[str, Any] = {**parse_set(args.set), "holdout": args.holdout}
    doc: dict[str, Any] = {
        "command": "python -m ganserve.benchmarks.ssgan_curve " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": cpu_info(), "steps": args.steps, "seeds": seeds, "overrides": overrides, "runs": [],
    }
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="ssgan_curve_") as work:
        for n in per_class:
            for seed in seeds:
                for method in methods:
                    if method == "svm":
                        run = svm_run(n, seed, overrides)
                    else:
                        run = train_run(method, n, seed, args.steps, overrides, Path(work))
                    doc["runs"].append(run)
                    print(f"{method:8s} labels={run['labels']:4d} seed={seed} {run['held_out']} accuracy="
                          f"{100 * run['accuracy']:.2f}% ({run['seconds']:.1f} s)", flush=True)
                    write_results(doc, out)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
