"""Mutation testing of the modules a regression would hurt most, each against its own fast tests (cosmic-ray).

cosmic-ray edits the module on disk for every mutant, so run this in a scratch clone with its own venv:

    git clone . /tmp/mutation && cd /tmp/mutation && make setup
    .venv/bin/pip install cosmic-ray==8.7.0
    .venv/bin/python mutation/run.py --sample 60          # or --sample 0 for every mutant (hours on 2 cores)

For each module: every mutant cosmic-ray's operators make is listed, those inside type annotations are set aside
(never evaluated: equivalent), a seeded uniform sample of --sample of the rest is run (each: apply, run the module's tests, restore), and the score is the share killed (a test failed or timed out).
Writes mutation/results/<module>.json (score, counts, every survivor's diff) and prints a table. The working tree is
restored with `git checkout` when a run ends, even on error.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "mutation" / "results"
PYTEST = f"{sys.executable} -m pytest -x -q -p no:cacheprovider"
# module -> its fast tests and the seconds after which a mutant's run counts as killed (a hang: a mutated batcher
# can wait forever); the tests take 3-11 s a run on 2 cores
MODULES = {
    "tiling": ("serving/tiling.py", "tests/serving/test_tiling.py tests/fuzz/test_fuzz_tiling.py", 40),
    "batcher": ("serving/batcher.py", "tests/serving/test_batcher.py tests/serving/test_batcher_mutants.py", 25),
    "imaging": ("serving/imaging.py", "tests/serving/test_imaging.py tests/fuzz/test_fuzz_imaging.py "
                "tests/serving/test_imaging_mutants.py", 40),
    "parity": ("export/parity.py", "tests/export/test_export_parity.py tests/export/test_parity_mutants.py", 60),
    "checkpoint": ("training/checkpoint.py", "tests/training/test_train_checkpoint.py "
                   "tests/training/test_checkpoint_mutants.py", 40),
}


def _config(name: str, module: str, tests: str, timeout: float) -> Path:
    existing = " ".join(t for t in tests.split() if (ROOT / t).exists())
    path = OUT / f"{name}.toml"
    path.write_text(f'[cosmic-ray]\nmodule-path = "{module}"\ntimeout = {timeout}\nexcluded-modules = []\n'
                    f'test-command = "{PYTEST} {existing}"\n\n[cosmic-ray.distributor]\nname = "local"\n')
    return path


def _annotation_spans(module: str) -> list[tuple[int, int, int, int]]:
    """Where the module's type annotations are. Every module starts with `from __future__ import annotations`, so an
    annotation is never evaluated: a mutant inside one (`str | Path` -> `str - Path`) is equivalent, not a gap."""
    spans = []
    for node in ast.walk(ast.parse((ROOT / module).read_text())):
        found = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            found = [x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            found = [node.annotation]
        spans += [(n.lineno, n.col_offset, n.end_lineno, n.end_col_offset) for n in found if n is not None]
    return spans


def _in_annotation(spans: list[tuple[int, int, int, int]], row: int, col: int) -> bool:
    return any((r0, c0) <= (row, col) < (r1, c1) for r0, c0, r1, c1 in spans)


def _sample(db: Path, module: str, size: int, seed: int) -> tuple[int, int, int]:
    """Drop the mutants inside annotations, then keep a seeded uniform sample of `size` of the rest (0 = all);
    returns (all, in annotations, kept)."""
    spans = _annotation_spans(module)
    with sqlite3.connect(db) as c:
        rows = c.execute("select job_id, start_pos_row, start_pos_col from mutation_specs order by job_id").fetchall()
        equivalent = [j for j, row, col in rows if _in_annotation(spans, row, col)]
        c.executemany("delete from mutation_specs where job_id = ?", [(j,) for j in equivalent])
        c.executemany("delete from work_items where job_id = ?", [(j,) for j in equivalent])
        jobs = [j for j, _, _ in rows if j not in set(equivalent)]
        if 0 < size < len(jobs):
            drop = set(jobs) - set(random.Random(seed).sample(jobs, size))
            c.executemany("delete from mutation_specs where job_id = ?", [(j,) for j in drop])
            c.executemany("delete from work_items where job_id = ?", [(j,) for j in drop])
        kept = c.execute("select count(*) from mutation_specs").fetchone()[0]
    return len(rows), len(equivalent), kept


def _results(db: Path) -> list[dict]:
    with sqlite3.connect(db) as c:
        rows = c.execute("select s.operator_name, s.start_pos_row, r.worker_outcome, r.test_outcome, r.diff "
                         "from mutation_specs s join work_results r on s.job_id = r.job_id").fetchall()
    return [{"operator": o, "line": line, "worker": (w or "").lower(), "test": (t or "").lower(), "diff": d}
            for o, line, w, t, d in rows]


def run_module(name: str, sample: int, seed: int, timeout: float | None) -> dict:
    module, tests, own_timeout = MODULES[name]
    config = _config(name, module, tests, timeout or own_timeout)
    db = OUT / f"{name}.sqlite"
    db.unlink(missing_ok=True)
    cr = str(Path(sys.executable).with_name("cosmic-ray"))
    subprocess.run([cr, "init", str(config), str(db)], cwd=ROOT, check=True, capture_output=True)
    total, equivalent, kept = _sample(db, module, sample, seed)
    t0 = time.monotonic()
    try:
        subprocess.run([cr, "exec", str(config), str(db)], cwd=ROOT, check=True, capture_output=True)
    finally:
        subprocess.run(["git", "checkout", "--", module], cwd=ROOT, check=False)
    rows = _results(db)
    ran = [r for r in rows if r["worker"] == "normal"]
    killed = [r for r in ran if r["test"] == "killed"]
    survived = [r for r in ran if r["test"] == "survived"]
    score = len(killed) / len(ran) if ran else float("nan")
    # 95% interval of a proportion from a sample (Wilson), so a sampled score says how sure it is
    z, n = 1.96, len(ran)
    centre = (score + z * z / (2 * n)) / (1 + z * z / n) if n else float("nan")
    half = z * math.sqrt(score * (1 - score) / n + z * z / (4 * n * n)) / (1 + z * z / n) if n else float("nan")
    doc = {"module": module, "tests": tests, "mutants": total, "in_annotations": equivalent, "sampled": kept, "ran": n, "killed": len(killed),
           "survived": len(survived), "other": len(rows) - n, "score": round(score, 4),
           "interval95": [round(centre - half, 4), round(centre + half, 4)], "seed": seed,
           "minutes": round((time.monotonic() - t0) / 60, 1),
           "survivors": [{k: r[k] for k in ("operator", "line", "diff")} for r in survived]}
    (OUT / f"{name}.json").write_text(json.dumps(doc, indent=1))
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modules", default=",".join(MODULES), help=f"comma-separated, of {', '.join(MODULES)}")
    p.add_argument("--sample", type=int, default=60, help="mutants per module, seeded uniform sample (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per mutant's test run, past which it counts as killed (default: per module)")
    args = p.parse_args(argv)
    names = [m for m in args.modules.split(",") if m]
    unknown = [m for m in names if m not in MODULES]
    if unknown or args.sample < 0:
        p.error(f"unknown module(s) {unknown}; use {', '.join(MODULES)}" if unknown else "--sample must be >= 0")
    if subprocess.run(["git", "status", "--porcelain", "--", *(MODULES[m][0] for m in names)], cwd=ROOT,
                      capture_output=True, text=True).stdout.strip():
        p.error("the modules to mutate have uncommitted changes: commit them first (the run restores with git)")
    OUT.mkdir(parents=True, exist_ok=True)
    print("| module | mutants | in annotations | run | killed | survived | score | 95% interval | minutes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|", flush=True)
    for name in names:
        d = run_module(name, args.sample, args.seed, args.timeout)
        print(f"| {d['module']} | {d['mutants']} | {d['in_annotations']} | {d['ran']} | {d['killed']} | {d['survived']} | {d['score']:.0%} | "
              f"{d['interval95'][0]:.0%}-{d['interval95'][1]:.0%} | {d['minutes']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
