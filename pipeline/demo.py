"""`ganserve demo`, the main job: models (shipped, reused or trained) → export → serve → real requests → report.

A second run reuses what the first made: runs/demo/ checkpoints, the model repository, and shipped models.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ganserve.core.cli_args import count, duration
from ganserve.core.contract import CARD_FILE, ModelCard, model_versions
from ganserve.core.errors import GanserveError
from ganserve.core.shipped import SHIPPED_ENV, SHIPPED_VARIANTS, read_entry, shipped_dir, shipped_entries



@dataclass
class DemoConfig:
    out: Path = Path("demo-output")
    repo: Path = Path("model-repository")
    runs: Path = Path("runs/demo")
    shipped: Path = field(default_factory=shipped_dir)  # the shipped entries to run (a folder in the models/ layout)
    train_minutes: float = 3.0  # per application, only where no shipped or earlier model exists
    bench_requests: int = 20
    examples: int = 3  # held-out requests per model
    models: list[str] = field(default_factory=list)  # entry names to run; empty = every shipped model
    retrain: bool = False
    tiny: bool = False  # tests: tiny networks and a few steps


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


# -- step 1: trained models -----------------------------------------------------------------------------------
@dataclass
class DemoModel:
    name: str  # served name (the shipped entry's name)
    checkpoint: Path
    origin: str
    options: dict = field(default_factory=dict)  # config overrides the entry records (e.g. a CycleGAN direction)


def _train_sr(cfg: DemoConfig) -> DemoModel:
    """The SR model when nothing is shipped (or --tiny): an earlier demo run's, else trained now on the built-in photos."""
    run_dir = cfg.runs / "srresnet"
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.is_file() and not cfg.retrain:
        return DemoModel("srresnet", ckpt, f"reused {ckpt} from an earlier run")
    from ganserve.training.config import RECIPES
    from ganserve.training.trainer import train

    overrides = {"blocks": 1, "channels": 8, "batch_size": 4} if cfg.tiny else {}
    recipe = RECIPES / "srresnet_cpu30.yaml"
    say(f"no shipped SR model in use: training srresnet on the built-in photos ({recipe.name} {overrides})")
    path = train("srresnet", overrides, steps=2 if cfg.tiny else None, config_file=recipe,
                 budget_minutes=None if cfg.tiny else cfg.train_minutes, out_dir=run_dir, progress=not cfg.tiny)
    budget = "2 steps (tiny)" if cfg.tiny else f"{cfg.train_minutes:g} min budget"
    return DemoModel("srresnet", path, f"trained now ({recipe.name}, {budget}, {overrides or 'no overrides'})")


def _retrain(cfg: DemoConfig, entry: Path) -> DemoModel:
    """--retrain: the entry's recorded recipe (config and seed) for the demo's time budget."""
    from ganserve.training.trainer import train

    card = read_entry(entry)
    say(f"{entry.name}: retraining {card['model']} from its recorded config for {cfg.train_minutes:g} min")
    path = train(card["model"], dict(card["config"]), budget_minutes=cfg.train_minutes, out_dir=cfg.runs / entry.name)
    return DemoModel(entry.name, path, f"retrained now ({card['model']}, recorded config, {cfg.train_minutes:g} min)",
                     card.get("options") or {})


def trained_models(cfg: DemoConfig) -> list[DemoModel]:
    """Every application's model: shipped (default), retrained (--retrain), or the SR fallback when none ships."""

    entries = [e for e in shipped_entries(cfg.shipped) if not cfg.models or e.name in cfg.models]
    unknown = sorted(set(cfg.models) - {e.name for e in entries} - {"srresnet"})
    if unknown:
        raise GanserveError(f"--models: no shipped model {', '.join(unknown)} (shipped: "
                            f"{', '.join(e.name for e in shipped_entries(cfg.shipped))})")
    found = []
    for entry in entries:
        if entry.name == "srresnet" and cfg.tiny:
            continue
        if cfg.retrain:
            found.append(_retrain(cfg, entry))
        else:
            card = read_entry(entry)
            found.append(DemoModel(entry.name, entry / card["file"], f"shipped model {_shown_path(entry)}",
                                   card.get("options") or {}))
    if not any(m.name == "srresnet" for m in found) and (not cfg.models or "srresnet" in cfg.models):
        found.insert(0, _train_sr(cfg))
    return found


def _shown_path(entry: Path) -> str:
    """models/NAME for the project's own entries, the full path for others."""
    return f"models/{entry.name}" if entry.parent.resolve() == shipped_dir().resolve() else str(entry)


# -- step 2: export -------------------------------------------------------------------------------------------
def ensure_exported(ckpt: Path, repo: Path, name: str, options: dict | None = None) -> ModelCard:
    """Export `ckpt` as `name` unless the repository already holds an export of this exact checkpoint."""
    from ganserve.core.files import file_sha256

    card_path = repo / name / CARD_FILE
    sha = file_sha256(ckpt)
    if card_path.is_file() and model_versions(repo / name):
        card = ModelCard.load(card_path)
        if card.source.get("checkpoint_sha256") == sha:
            say(f"model repository already holds {name} v{card.version} exported from this checkpoint: reused")
            return card
    from ganserve.export.exporter import export_checkpoint

    say(f"exporting {ckpt} -> {repo}/{name} (ONNX, parity check, {', '.join(SHIPPED_VARIANTS)} variants that pass the "
        "quality rule, model card)")
    export_checkpoint(ckpt, repo, name=name, options=options or None, variants=SHIPPED_VARIANTS,
                      drop_failing_variants=True)
    return ModelCard.load(card_path)


# -- step 4: requests ------------------------------------------------------------------------------------------
def request_examples(server: str, model: DemoModel, card: ModelCard, cfg: DemoConfig) -> tuple[list[dict], list]:
    """Send the application's held-out examples through the image API; write side-by-sides; return the rows and
    each example's `demo_tasks.Outcome` (in the same order)."""
    from ganserve.core.pictures import labelled_row
    from ganserve.pipeline.demo_requests import ask
    from ganserve.serving.client import ImagesClient
    from ganserve.training.checkpoint import build_from_checkpoint

    examples = build_from_checkpoint(model.checkpoint, model.options or None).demo_examples(cfg.examples)
    folder = cfg.out / model.name
    folder.mkdir(parents=True, exist_ok=True)
    rows, outcomes = [], []
    with ImagesClient(server) as client:
        for ex in examples:
            outcome = ask(client, card, ex)
            labelled_row(outcome.panels).save(folder / f"{ex.name}.png")
            rows.append({**outcome.row, "side_by_side": str(folder / f"{ex.name}.png")})
            outcomes.append(outcome)
    return rows, outcomes


def write_main_picture(path: Path, models: list[DemoModel], cards: dict[str, ModelCard], firsts: dict) -> Path | None:
    """The main picture: the first held-out example of every model, one labelled row each, in the models' order
    (`demo_tasks.main_row`, `pictures.contact_sheet`); None when no model answered an example."""
    from ganserve.core.pictures import contact_sheet
    from ganserve.pipeline.demo_requests import main_row

    rows = [main_row(cards[m.name], firsts[m.name]) for m in models if m.name in firsts]
    if not rows:
        return None
    contact_sheet(rows)[0].save(path)
    return path


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _report(models: list[DemoModel], cards: dict[str, ModelCard], results: dict[str, list[dict]],
            latency_md: str, main_picture: Path | None = None) -> list[str]:
    from ganserve.pipeline.demo_requests import summarise

    lines = ["# ganserve demo", "", "Every model was served by ganserve over gRPC on 127.0.0.1 and asked through the "
             "image API about held-out data it never trained on.", ""]
    if main_picture is not None:  # written beside summary.md
        lines += [f"The main picture, the first held-out example of every model ({main_picture.name}):", "",
                  f"![the first held-out example of every model]({main_picture.name})", ""]
    lines += ["| model | task | from | examples | model PSNR-Y | baseline PSNR-Y | model SSIM-Y | baseline SSIM-Y | "
              "model PSNR (RGB) | baseline PSNR (RGB) | colourfulness | truth's colourfulness | accuracy | "
              "mean request ms |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        card, summary = cards[m.name], summarise(results[m.name])
        cells = [summary.get(k) for k in ("psnr_y", "baseline_psnr_y", "ssim_y", "baseline_ssim_y", "psnr",
                                          "baseline_psnr", "colourfulness", "truth_colourfulness", "accuracy",
                                          "request_ms")]
        lines.append(f"| {m.name} | {card.task} | {m.origin} | {int(summary['examples'])} | "
                     + " | ".join("–" if c is None else f"{c:.4g}" for c in cells) + " |")
    lines += ["", "Baselines: bicubic upscaling (super-resolution); the input itself (translation, deraining, face "
              "aging). PSNR-Y/SSIM-Y are on luma (the SR convention); translation is judged on RGB (a colouriser keeps "
              "its input's luma, so luma alone cannot tell its colours), with Hasler and Suesstrunk's colourfulness "
              "next to the truth's. Side-by-side pictures are in one folder per model.", ""]
    for m in models:
        rows = results[m.name]
        keys = [k for k in rows[0] if k not in ("side_by_side",)] if rows else []
        lines += [f"## {m.name}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
        lines.append("")
    latency = latency_md.replace("# ganserve bench — every image model, one run", "## Latency: every image model")
    return lines + [latency.replace("](", "](latency/")]


# -- the whole job -----------------------------------------------------------------------------------------------
def run_demo(cfg: DemoConfig) -> dict:
    from ganserve.benchmarks.bench import BenchConfig, run_bench_models
    from ganserve.pipeline.demo_requests import summarise
    from ganserve.serving.server import start_subprocess

    t_start = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    say("step 1/5: trained models")
    models = trained_models(cfg)
    for m in models:
        say(f"{m.name}: {m.origin}")
    say("step 2/5: export to the model repository")
    cards = {m.name: ensure_exported(m.checkpoint, cfg.repo, m.name, m.options) for m in models}
    say("step 3/5: start the server on 127.0.0.1")
    proc, port, metrics_port, _ = start_subprocess(cfg.repo)
    server = f"127.0.0.1:{port}"
    say(f"server ready at {server} (metrics on :{metrics_port})")
    results: dict[str, list[dict]] = {}
    firsts: dict = {}  # each model's first example's Outcome: its row of the main picture
    try:
        say("step 4/5: held-out requests through the image API")
        for m in models:
            results[m.name], outcomes = request_examples(server, m, cards[m.name], cfg)
            if outcomes:
                firsts[m.name] = outcomes[0]
            figures = summarise(results[m.name])
            say(f"{m.name} ({cards[m.name].task}): " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    main_picture = write_main_picture(cfg.out / "main_job.png", models, cards, firsts)
    if main_picture is not None:
        say(f"main picture (the first example of every model): {main_picture}")
    say("step 5/5: latency table, every image model (torch eager vs the server's choice in-process vs served)")
    image_models = [m for m in models if cards[m.name].input_by_role("image") and cards[m.name].output_by_role("image")]
    _, files = run_bench_models(BenchConfig(
        repo=cfg.repo, model=image_models[0].name if image_models else "", sizes=[32 if cfg.tiny else 64],
        batches=[1], concurrency=[1, 4], duration=None, requests=4 if cfg.tiny else cfg.bench_requests,
        out=cfg.out / "latency", paths=["torch", "ort", "oip-raw", "grpc-floor", "image-api"],
        command="ganserve demo (latency step)"), [m.name for m in image_models],
        {m.name: m.checkpoint for m in image_models})
    summary = {
        "models": {m.name: {"task": cards[m.name].task, "checkpoint": str(m.checkpoint), "origin": m.origin,
                            "card_metrics": cards[m.name].metrics, "requests": results[m.name]} for m in models},
        "latency_report": str(files["markdown"]), "main_picture": str(main_picture) if main_picture else None,
        "wall_seconds": time.perf_counter() - t_start,
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2))
    report = _report(models, cards, results, files["markdown"].read_text(), main_picture)
    (cfg.out / "summary.md").write_text("\n".join(report) + "\n")
    say(f"done in {summary['wall_seconds']:.0f} s: see {cfg.out}/summary.md"
        + (f" and the main picture {main_picture}" if main_picture else ""))
    return summary


def add_commands(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(name, help="the main job: models, export, serve, requests, report",
                              description="Use the shipped models (models/; or retrain them), export them, serve them "
                                          "on 127.0.0.1, send each application's held-out examples through the "
                                          "image API and write side-by-side images, quality figures against "
                                          "their baselines and a latency table.")
    p.add_argument("--out", type=Path, default=DemoConfig.out, help="output folder (default demo-output)")
    p.add_argument("--repo", type=Path, default=DemoConfig.repo, help="model repository (default model-repository)")
    p.add_argument("--runs", type=Path, default=DemoConfig.runs, help="training runs folder (default runs/demo)")
    p.add_argument("--train-minutes", type=duration(positive=True), default=DemoConfig.train_minutes,
                   help="training budget per model where none is shipped or reusable (default 3)")
    p.add_argument("--bench-requests", type=count(1), default=DemoConfig.bench_requests,
                   help="requests per latency-table row (default 20)")
    p.add_argument("--shipped", type=Path, default=None, metavar="DIR",
                   help=f"folder of shipped entries to run (default: ${SHIPPED_ENV}, else models/ here)")
    p.add_argument("--models", default="", help="comma-separated shipped model names (default: all of models/)")
    p.add_argument("--examples", type=count(1), default=DemoConfig.examples,
                   help="held-out requests per model (default 3)")
    p.add_argument("--retrain", action="store_true",
                   help="retrain every model from its recorded config for --train-minutes instead of using it")
    p.add_argument("--tiny", action="store_true", help="tiny networks and a few steps (for tests)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = DemoConfig(out=args.out, repo=args.repo, runs=args.runs, train_minutes=args.train_minutes,
                     shipped=args.shipped or shipped_dir(), bench_requests=args.bench_requests, examples=args.examples,
                     models=[m.strip() for m in args.models.split(",") if m.strip()], retrain=args.retrain, tiny=args.tiny)
    run_demo(cfg)
    return 0
