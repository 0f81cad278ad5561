"""One rule for where a benchmark goes (docs/architecture.md, "Where does it go"): a path inside `ganserve bench`
when it times one model per request path next to torch and the peers; else a standalone module with `main()` that
prints the CPU first and writes its report under benchmarks/results/<question>/ (or where --out / --json say).
Checked on the source of every module of the benchmarks package."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import ganserve.benchmarks as benchmarks

# Modules with a main() that are not benchmarks: the gRPC floor server the bench times, the page's screenshot tool.
HELPERS = {"grpc_floor", "page_screenshot"}
# The bench itself and its command line.
BENCH = {"bench", "cli"}


def _standalone() -> dict[str, str]:
    found = {}
    for module in pkgutil.iter_modules(benchmarks.__path__):
        path = Path(benchmarks.__path__[0]) / f"{module.name}.py"
        source = path.read_text()
        tree = ast.parse(source)
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body) and module.name not in HELPERS:
            found[module.name] = source
    return found


def test_every_standalone_benchmark_prints_the_cpu_and_writes_a_report() -> None:
    found = _standalone()
    assert len(found) >= 10 and not BENCH & set(found)
    missing_cpu = [name for name, source in found.items() if "cpu_info" not in source and "describe(" not in source]
    assert not missing_cpu, f"benchmarks that do not print the CPU: {missing_cpu}"
    missing_out = [name for name, source in found.items()
                   if not any(mark in source for mark in ("benchmarks/results/", '"--out"', '"--json"'))]
    assert not missing_out, f"benchmarks that write no report: {missing_out}"


def test_the_helpers_named_here_exist() -> None:
    names = {m.name for m in pkgutil.iter_modules(benchmarks.__path__)}
    assert HELPERS | BENCH <= names
