"""Benchmark report: one JSON document, a Markdown table with ratios, and PNG charts vs concurrency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def best(rows: list[dict], path: str, size: int, batch: int | None = None) -> dict | None:
    """The row of `path` at `size` (and batch) with the highest throughput (images/s)."""
    cands = [r for r in rows if r["path"] == path and r["size"] == size and (batch is None or r["batch"] == batch)]
    return max(cands, key=lambda r: r["images_per_s"], default=None)


def compute_ratios(rows: list[dict], sizes: list[int]) -> list[dict]:
    """The headline ratios, each from two rows measured in this run (named so a reader can check them)."""
    out = []

    def ratio(name: str, num: dict | None, den: dict | None, key: str, size: int) -> None:
        if num and den and den[key] > 0:
            out.append({"ratio": name, "size": size, "value": num[key] / den[key], "key": key,
                        "numerator": f"{num['path']} b{num['batch']} c{num['concurrency']}",
                        "denominator": f"{den['path']} b{den['batch']} c{den['concurrency']}"})

    for s in sizes:
        ort = best(rows, "ort-inprocess", s)
        torch_best = max((r for r in rows if r["path"].startswith("torch-") and r["size"] == s),
                         key=lambda r: r["images_per_s"], default=None)
        served = max((r for r in rows if r["path"] in ("oip-raw", "tritonclient-aio") and r["size"] == s),
                     key=lambda r: r["images_per_s"], default=None)
        ratio("served / in-process ORT throughput", served, ort, "images_per_s", s)
        ratio("ORT / best torch eager throughput", ort, torch_best, "images_per_s", s)
        ours = best(rows, "oip-raw", s, batch=1)
        peer = best(rows, "peer-torchserve", s, batch=1)
        ratio("ganserve / TorchServe throughput", ours, peer, "images_per_s", s)
        if ours and peer:
            # p99 at the concurrency where each side has its best throughput
            ratio("ganserve / TorchServe p99", ours, peer, "p99_ms", s)
        inproc = max((r for r in rows if r["size"] == s and r["concurrency"] == 1 and r["batch"] == 1 and
                      (r["path"].startswith(("ort-", "torch-", "openvino-native")) and r["path"] != "ort-inprocess")
                      and r.get("extra", {}).get("passed", True)),
                     key=lambda r: r["images_per_s"], default=None)
        ratio("served / best in-process path throughput (b1)", served, inproc, "images_per_s", s)
        ratio("served / torch bf16 autocast throughput", served, best(rows, "torch-bf16-cl", s), "images_per_s", s)
        passing = max((r for r in rows if r["size"] == s and r["batch"] == 1 and r["concurrency"] == 1 and
                       r["path"].startswith("ort-") and r.get("extra", {}).get("passed")),
                      key=lambda r: r["images_per_s"], default=None)
        ratio("best passing ORT candidate / ORT CPU fp32 (b1)", passing, best(rows, "ort-cpu-fp32", s, batch=1),
              "images_per_s", s)
        one_ort = next((r for r in rows if r["path"] == "ort-inprocess" and r["size"] == s and r["batch"] == 1), None)
        one_srv = next((r for r in rows if r["path"] == "oip-raw" and r["size"] == s and r["batch"] == 1
                        and r["concurrency"] == 1), None)
        if one_ort and one_srv:
            out.append({"ratio": "p50 added by the server (ms, c1 b1)", "size": s,
                        "value": one_srv["p50_ms"] - one_ort["p50_ms"], "key": "p50_ms",
                        "numerator": "oip-raw b1 c1", "denominator": "ort-inprocess b1"})
            one_http = next((r for r in rows if r["path"] == "http-raw" and r["size"] == s and r["batch"] == 1
                             and r["concurrency"] == 1), None)
            if one_http:
                out.append({"ratio": "p50 added by the server over HTTP (ms, c1 b1)", "size": s,
                            "value": one_http["p50_ms"] - one_ort["p50_ms"], "key": "p50_ms",
                            "numerator": "http-raw b1 c1", "denominator": "ort-inprocess b1"})
                ratio("HTTP / gRPC p50 (KServe v2, c1 b1)", one_http, one_srv, "p50_ms", s)
            floor = next((r for r in rows if r["path"] == "grpc-floor" and r["size"] == s), None)
            if floor:
                out.append({"ratio": "p50 added by ganserve beyond the gRPC floor (ms, c1 b1)", "size": s,
                            "value": one_srv["p50_ms"] - one_ort["p50_ms"] - floor["p50_ms"], "key": "p50_ms",
                            "numerator": "oip-raw b1 c1 - ort-inprocess b1", "denominator": "grpc-floor c1"})
    return out


# Issue 40's targets for ganserve against each peer: throughput at the highest concurrency at least 2x the peer's,
# p50 at concurrency 1 at most half the peer's. ganserve's side is the OIP raw-tensor path at batch 1.
PEER_TARGETS = {"throughput": 2.0, "p50": 0.5}


def peer_ratios(rows: list[dict], sizes: list[int], concurrency: list[int]) -> list[dict]:
    """Per size and peer path: ganserve's img/s at the top concurrency over the peer's, and ganserve's p50 at the
    lowest concurrency over the peer's (both batch 1, both rows of this run)."""
    lo, hi = min(concurrency), max(concurrency)
    out = []
    for s in sizes:
        for peer in sorted({r["path"] for r in rows if r["path"].startswith("peer-") and r["size"] == s}):
            ours_hi, theirs_hi = _row(rows, "oip-raw", s, hi), _row(rows, peer, s, hi)
            ours_lo, theirs_lo = _row(rows, "oip-raw", s, lo), _row(rows, peer, s, lo)
            out.append({
                "size": s, "peer": peer, "high_concurrency": hi, "low_concurrency": lo,
                "ganserve_img_s": ours_hi and ours_hi["images_per_s"], "peer_img_s": theirs_hi and theirs_hi["images_per_s"],
                "throughput_ratio": (ours_hi["images_per_s"] / theirs_hi["images_per_s"]
                                     if ours_hi and theirs_hi and theirs_hi["images_per_s"] > 0 else None),
                "ganserve_p50_ms": ours_lo and ours_lo["p50_ms"], "peer_p50_ms": theirs_lo and theirs_lo["p50_ms"],
                "p50_ratio": (ours_lo["p50_ms"] / theirs_lo["p50_ms"]
                              if ours_lo and theirs_lo and theirs_lo["p50_ms"] > 0 else None),
            })
    return out


def _verdict(value: float | None, target: float, at_least: bool) -> str:
    if value is None:
        return "–"
    met = value >= target if at_least else value <= target
    return f"{value:.2f} ({'met' if met else 'missed'})"


def peer_table(ratios: list[dict]) -> list[str]:
    """Markdown lines: ganserve (oip-raw b1) against each peer path, with the targets."""
    if not ratios:
        return []
    hi, lo = ratios[0]["high_concurrency"], ratios[0]["low_concurrency"]
    tp, p50 = PEER_TARGETS["throughput"], PEER_TARGETS["p50"]
    lines = ["", f"ganserve (oip-raw, batch 1) against the peers: throughput at c{hi}, target ≥ {tp:g}×; p50 at c{lo}, "
             f"target ≤ {p50:g}×", "",
             f"| size | peer | ganserve img/s c{hi} | peer img/s c{hi} | ganserve ÷ peer | ganserve p50 ms c{lo} | "
             f"peer p50 ms c{lo} | ganserve ÷ peer |", "|---|---|---|---|---|---|---|---|"]
    for q in ratios:
        lines.append(f"| {q['size']} | {q['peer']} | {_fmt(q['ganserve_img_s'])} | {_fmt(q['peer_img_s'])} | "
                     f"{_verdict(q['throughput_ratio'], tp, True)} | {_fmt(q['ganserve_p50_ms'])} | "
                     f"{_fmt(q['peer_p50_ms'])} | {_verdict(q['p50_ratio'], p50, False)} |")
    return lines


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"# ganserve bench — {doc['model']}",
        "",
        f"- machine: {machine_line(m)}",
        f"- command: `{doc['command']}`",
        f"- started {doc['started']}; warm-up excluded; `n` = requests each row rests on",
        "",
        "| path | size | batch | conc. | n | p50 ms | p90 ms | p99 ms | mean ms | req/s | img/s | GFLOP/s | % of peak (precision) | CPU % | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        lines.append(
            f"| {r['path']} | {r['size']} | {r['batch']} | {r['concurrency']} | {r['requests']} | {_fmt(r['p50_ms'])} | "
            f"{_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['mean_ms'])} | {_fmt(r['throughput_rps'], 2)} | "
            f"{_fmt(r['images_per_s'], 2)} | {_fmt(r.get('gflops_per_s'))} | {_fmt(r.get('pct_of_peak'))}{_of(r)} | "
            f"{_fmt(r.get('cpu_percent'), 0)} | {_fmt(r.get('peak_rss_mb'), 0)} |"
        )
    if doc.get("ratios"):
        lines += ["", "| ratio | size | value | from |", "|---|---|---|---|"]
        for q in doc["ratios"]:
            lines.append(f"| {q['ratio']} | {q['size']} | {q['value']:.2f} | {q['numerator']} ÷ {q['denominator']} |")
    lines += peer_table(doc.get("peer_ratios") or [])
    if doc.get("candidates"):
        lines += ["", "Candidates (reference-set check, the server's quality rule):", "",
                  "| path | provider | precision | passes | check |", "|---|---|---|---|---|"]
        for c in doc["candidates"]:
            lines.append(f"| {c['path']} | {c['provider']} | {c['precision']} | {'yes' if c['passed'] else 'NO'} | "
                         f"{c['reference_check']} |")
    split = [r for r in doc["results"] if "decode_ms" in r.get("extra", {})]
    if split:
        lines += ["", "Image API, median time per request inside the server:", "",
                  "| path | size | conc. | decode ms | inference ms (queue + runs) | encode ms |", "|---|---|---|---|---|---|"]
        for r in split:
            e = r["extra"]
            lines.append(f"| {r['path']} | {r['size']} | {r['concurrency']} | {e['decode_ms']:.1f} | {e['infer_ms']:.1f} | "
                         f"{e['encode_ms']:.1f} |")
    for size, table in (doc.get("codecs") or {}).items():
        lines += ["", f"Codecs on the model's output for a {size}×{size} input (in-process, median):", "",
                  "| codec | encode ms | decode ms | bytes | lossless |", "|---|---|---|---|---|"]
        for c in table:
            lines.append(f"| {c['codec']} | {c['encode_ms']:.2f} | {c['decode_ms']:.2f} | {c['bytes']} | "
                         f"{'yes' if c['lossless'] else 'no'} |")
    if doc.get("skipped"):
        lines += ["", "Not measured:"] + [f"- {s}" for s in doc["skipped"]]
    if doc.get("notes"):
        lines += [""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


def charts(doc: dict, out_dir: Path) -> list[Path]:
    """Latency (p50, p99) and throughput vs concurrency for every served path, one pair of charts per size."""
    written = []
    rows = doc["results"]
    for size in sorted({r["size"] for r in rows}):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for path in sorted({r["path"] for r in rows if r["size"] == size}):
            for batch in sorted({r["batch"] for r in rows if r["path"] == path and r["size"] == size}):
                pts = sorted((r for r in rows if r["path"] == path and r["size"] == size and r["batch"] == batch),
                             key=lambda r: r["concurrency"])
                xs = [r["concurrency"] for r in pts]
                label = f"{path} b{batch}"
                style = "-o" if len(xs) > 1 else "s"
                ax1.plot(xs, [r["p50_ms"] for r in pts], style, label=label + " p50")
                ax2.plot(xs, [r["images_per_s"] for r in pts], style, label=label)
        for ax, title, ylabel in ((ax1, "latency p50", "ms"), (ax2, "throughput", "images/s")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{doc['model']} {size}×{size}: {title}")
            ax.grid(alpha=0.3)
        ax2.legend(fontsize=7, loc="best")
        fig.suptitle(doc["machine"]["cpu_model"], fontsize=8)
        fig.tight_layout()
        path = out_dir / f"concurrency_{size}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _of(row: dict) -> str:
    """" (bf16)": which precision's peak a row's % of peak is read against."""
    return f" ({row['peak_of']})" if row.get("peak_of") else ""


def _row(rows: list[dict], path: str, size: int, concurrency: int | None = None) -> dict | None:
    """The batch-1 row of `path` at `size` (at `concurrency`, else the one with the best throughput)."""
    cands = [r for r in rows if r["path"] == path and r["size"] == size and r["batch"] == 1
             and (concurrency is None or r["concurrency"] == concurrency)]
    return max(cands, key=lambda r: r["images_per_s"], default=None)


def machine_line(m: dict) -> str:
    """The CPU and the three matrix peaks every figure of a run is read against."""
    bf16 = f"{m['bf16_matmul_peak_gflops']:.0f} GFLOP/s" if m.get("bf16_matmul_peak_gflops") else "n/a (no bf16 hardware)"
    int8 = (f"{m['int8_matmul_peak_gops']:.0f} GOP/s ({m.get('int8_peak_engine')})" if m.get("int8_matmul_peak_gops")
            else "n/a")
    return (f"{m['cpu_model']}, {m['logical_cpus']} logical CPUs, ISA: {', '.join(m['isa']) or '-'}; peaks: fp32 "
            f"{m['matmul_peak_gflops']:.0f} GFLOP/s (numpy sgemm), bf16 {bf16}, int8 {int8}")


def summary_rows(docs: list[dict]) -> list[dict]:
    """One row per (model, size): torch fp32/bf16, the server's choice in-process, served, and their ratios."""
    out = []
    for doc in docs:
        rows = doc["results"]
        for size in doc["settings"]["sizes"]:
            fp32, bf16 = _row(rows, "torch-fp32-cl", size), _row(rows, "torch-bf16-cl", size)
            inproc, c1 = _row(rows, "ort-inprocess", size), _row(rows, "oip-raw", size, 1)
            floor = _row(rows, "grpc-floor", size, 1)
            served = _row(rows, "oip-raw", size)
            top = _row(rows, "oip-raw", size, max(doc["settings"]["concurrency"]))
            torch_best = max((r for r in (fp32, bf16) if r), key=lambda r: r["images_per_s"], default=None)

            def ratio(a: dict | None, b: dict | None) -> float | None:
                return a["images_per_s"] / b["images_per_s"] if a and b and b["images_per_s"] > 0 else None
            out.append({
                "model": doc["model"], "task": doc.get("task"), "size": size, "served_as": doc.get("served_as"),
                "torch_fp32_cl_ms": fp32 and fp32["p50_ms"], "torch_bf16_cl_ms": bf16 and bf16["p50_ms"],
                "inprocess_ms": inproc and inproc["p50_ms"], "served_c1_ms": c1 and c1["p50_ms"],
                "served_best_img_s": served and served["images_per_s"],
                "served_best_concurrency": served and served["concurrency"],
                "served_vs_torch_bf16": ratio(served, bf16), "served_vs_torch_fp32": ratio(served, fp32),
                "served_vs_best_torch": ratio(served, torch_best),
                "added_c1_ms": c1["p50_ms"] - inproc["p50_ms"] if c1 and inproc else None,
                "floor_c1_ms": floor and floor["p50_ms"],
                "added_beyond_floor_ms": c1["p50_ms"] - inproc["p50_ms"] - floor["p50_ms"] if c1 and inproc and floor
                else None,
                "p99_over_p50_top": top["p99_ms"] / top["p50_ms"] if top else None,
                "top_concurrency": top and top["concurrency"],
            })
    return out


def write_summary(docs: list[dict], machine: dict, command: str, out_dir: Path) -> dict[str, Path]:
    """summary.json and summary.md: every model of one run side by side (p50 ms at batch 1; throughput ratios)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary_rows(docs)
    lines = ["# ganserve bench — every image model, one run", "", f"- machine: {machine_line(machine)}",
             f"- command: `{command}`", "- p50 ms at batch 1, concurrency 1; served = OIP raw tensors through the "
             "server; ratios are throughputs (images/s) of the served path at its best concurrency over the torch "
             "path at concurrency 1", "",
             "| model | size | served as | torch fp32 cl | torch bf16 cl | in-process (server's choice) | served c1 | "
             "added c1 (gRPC floor) | served best img/s (conc.) | ÷ torch bf16 | ÷ torch fp32 | p99/p50 at top conc. |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['served_as'] or '–'} | {_fmt(r['torch_fp32_cl_ms'])} | "
            f"{_fmt(r['torch_bf16_cl_ms'])} | {_fmt(r['inprocess_ms'])} | {_fmt(r['served_c1_ms'])} | "
            f"{_fmt(r['added_c1_ms'], 2)} ({_fmt(r['floor_c1_ms'], 2)}) | {_fmt(r['served_best_img_s'])} "
            f"({_fmt(r['served_best_concurrency'])}) | "
            f"{_fmt(r['served_vs_torch_bf16'], 2)} | {_fmt(r['served_vs_torch_fp32'], 2)} | "
            f"{_fmt(r['p99_over_p50_top'], 2)} (c{_fmt(r['top_concurrency'])}) |")
    lines += ["", "Per-model tables: " + ", ".join(f"[{d['model']}]({d['model']}/results.md)" for d in docs)]
    (out_dir / "summary.json").write_text(json.dumps({"machine": machine, "command": command, "rows": table}, indent=2))
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return {"json": out_dir / "summary.json", "markdown": out_dir / "summary.md"}


def write_report(doc: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2))
    (out_dir / "results.md").write_text(markdown(doc))
    files = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    for i, p in enumerate(charts(doc, out_dir)):
        files[f"chart{i}"] = p
    return files
