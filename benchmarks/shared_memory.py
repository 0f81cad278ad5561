"""What the server adds through system shared memory: p50 at concurrency 1 of a tile-safe image model at 256².

    .venv/bin/python -m ganserve.benchmarks.shared_memory [--model-dir models/srresnet] [--size 256]
        [--requests 30] [--echo-requests 300] [--out benchmarks/results/shared_memory]

Times, one request at a time, on the same input: (a) the model in-process on ONNX Runtime, with the candidate the
server would choose (provider and precision; the server is then pinned to it); (b) tritonclient.grpc with the
tensors in the request; (c) tritonclient.grpc with input and output in registered /dev/shm regions (the client
writes its input into the region before each request: it is part of the time); (d) one numpy copy of the output's
bytes, the memory-bandwidth cost that writing an output anywhere has. "Server adds" = served p50 - in-process p50.

The same four are measured again on "echo4", a ×4 nearest-neighbour upscaler with the same input and output sizes
and almost no compute: its in-process time is the copy ONNX Runtime makes, so its differences are the transport's
cost, measured without the model's own run-to-run spread. The server runs in a subprocess (`ganserve serve`).
Prints the CPU first; writes shared_memory.json and shared_memory.md to --out. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, REFERENCE_FILE, ModelCard, TensorSpec, \
    triton_config
from ganserve.benchmarks.loadgen import timed_loop
from ganserve.core.machine import cpu_info, describe


def triton_shm():
    """tritonclient.utils.shared_memory, importable with the locked setuptools.

    tritonclient 2.41 finds its libcshm.so through pkg_resources.resource_filename, which setuptools 81 and newer no
    longer ship; when pkg_resources is missing, a stand-in module with that one function is registered first (the
    library sits beside the package's __init__.py)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        def resource_filename(package: str, resource: str) -> str:
            spec = importlib.util.find_spec(package)
            if spec is None or spec.origin is None:
                raise ModuleNotFoundError(package)
            return str(Path(spec.origin).parent / resource)

        stand_in = types.ModuleType("pkg_resources")
        stand_in.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stand_in
    import tritonclient.utils.shared_memory as shm
    return shm


def write_echo4(repo: Path) -> Path:
    """A ×4 nearest-neighbour upscaler, FP32 [N, 3, H, W] -> [N, 3, 4H, 4W]: srresnet's tensor sizes, no compute."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scales = numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "scales")
    graph = helper.make_graph([helper.make_node("Resize", ["lr", "", "scales"], ["hr"], mode="nearest")], "echo4",
                              [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["N", 3, "H4", "W4"])], [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    card = ModelCard(name="echo4", task="super_resolution", architecture="nearest-x4",
                     inputs=[TensorSpec("lr", [3, -1, -1], value_range=[-1, 1])],
                     outputs=[TensorSpec("hr", [3, -1, -1], value_range=[-1, 1])], scale=4)
    folder = repo / "echo4"
    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / MODEL_FILE))
    (folder / CARD_FILE).write_text(card.to_json())
    (folder / CONFIG_FILE).write_text(triton_config(card))
    return folder


def p50_ms(function: Callable[[], object], count: int, warmup: int = 3) -> dict[str, float]:
    ms = np.array(timed_loop(function, requests=count, warmup=warmup)[0]) * 1e3
    return {"n": count, "p50_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min())}


def in_process(folder: Path, cache: Path, image: np.ndarray) -> tuple[Callable[[], object], str, str, str]:
    """The server's own choice for this model (its timing and reference check), built in this process:
    (run, provider, precision, summary)."""
    from ganserve.serving.runtime import RuntimeSettings, choose_runner

    card = ModelCard.from_dict(json.loads((folder / CARD_FILE).read_text()))
    version = folder / "1"
    reference = version / REFERENCE_FILE
    choice = choose_runner(version, card, reference if reference.exists() else None, RuntimeSettings(cache_dir=cache))
    runner = choice.runner
    name = card.inputs[0].name
    return (lambda: runner.run({name: image})), choice.candidate.provider, choice.candidate.precision, choice.summary


def served(grpc_port: int, model: str, names: tuple[str, str], image: np.ndarray, out_shape: list[int],
           count: int) -> dict[str, dict]:
    """(b) plain gRPC and (c) gRPC through shared memory, same client, same input; checks both answers agree."""
    import tritonclient.grpc as tc

    shm = triton_shm()
    client = tc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    in_name, out_name = names
    out_bytes = int(np.prod(out_shape)) * 4
    key = f"/ganserve_bench_{os.getpid()}"
    handle = shm.create_shared_memory_region("bench", key, image.nbytes + out_bytes)
    try:
        client.unregister_system_shared_memory()
        client.register_system_shared_memory("bench", key, image.nbytes + out_bytes)

        def plain() -> np.ndarray:
            tensor = tc.InferInput(in_name, list(image.shape), "FP32")
            tensor.set_data_from_numpy(image)
            return client.infer(model, [tensor]).as_numpy(out_name)

        tensor = tc.InferInput(in_name, list(image.shape), "FP32").set_shared_memory("bench", image.nbytes)
        wanted = tc.InferRequestedOutput(out_name)
        wanted.set_shared_memory("bench", out_bytes, image.nbytes)

        def shared() -> np.ndarray:
            shm.set_shared_memory_region(handle, [image])
            client.infer(model, [tensor], outputs=[wanted])
            return shm.get_contents_as_numpy(handle, np.float32, out_shape, image.nbytes)

        same = bool(np.array_equal(plain(), shared()))
        rows = {"grpc": p50_ms(plain, count), "grpc_shm": p50_ms(shared, count)}
        rows["grpc_shm_infer_only"] = p50_ms(lambda: client.infer(model, [tensor], outputs=[wanted]), count)
        rows["same_output"] = same  # type: ignore[assignment]
        tiny = image[:, :, :4, :4].copy()  # the request floor: the same call with a 4x4 input, almost no bytes
        floor = tc.InferInput(in_name, list(tiny.shape), "FP32")
        floor.set_data_from_numpy(tiny)
        rows["grpc_4x4"] = p50_ms(lambda: client.infer(model, [floor]), count)
        client.unregister_system_shared_memory()
        return rows
    finally:
        shm.destroy_shared_memory_region(handle)
        client.close()


def measure(model: str, folder: Path, repo: Path, cache: Path, size: int, count: int, scale: int) -> dict:
    from ganserve.serving.server import start_subprocess

    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    run, provider, precision, summary = in_process(folder, cache, image)
    output = next(iter(run().values()))
    row = {"model": model, "size": size, "served_as": f"{provider}/{precision}", "choice": summary,
           "output_bytes": int(output.nbytes), "in_process": p50_ms(run, count)}
    row["copy_output"] = p50_ms(lambda: output.copy(), max(count, 100))
    short = {"CPUExecutionProvider": "cpu", "OpenVINOExecutionProvider": "openvino"}.get(provider, provider)
    child = start_subprocess(repo, ["--providers", short, "--precision", precision, "--cache-dir", str(cache),
                                    "--max-message-mb", "256", "--log-level", "WARNING"])
    try:
        card = ModelCard.from_dict(json.loads((folder / CARD_FILE).read_text()))
        row.update(served(child.port, model, (card.inputs[0].name, card.outputs[0].name), image, [1, 3, size * scale, size * scale], count))
    finally:
        child.proc.terminate()
        child.proc.wait(60)
    base = row["in_process"]["p50_ms"]
    row["server_adds_ms"] = {"grpc": row["grpc"]["p50_ms"] - base, "grpc_shm": row["grpc_shm"]["p50_ms"] - base,
                             "grpc_shm_infer_only": row["grpc_shm_infer_only"]["p50_ms"] - base}
    row["target_ms"] = 0.3 + row["copy_output"]["p50_ms"]
    tiny_run, *_ = in_process(folder, cache, image[:, :, :4, :4].copy())
    row["in_process_4x4"] = p50_ms(tiny_run, count)
    row["server_adds_ms"]["grpc_4x4"] = row["grpc_4x4"]["p50_ms"] - row["in_process_4x4"]["p50_ms"]
    return row


def _met(adds: float, target: float) -> str:
    """A negative "adds" means the model's own run-to-run spread swamped the difference: no verdict."""
    return "no verdict (spread)" if adds < 0 else "yes" if adds <= target else "no"


def markdown(doc: dict) -> str:
    lines = [f"# System shared memory: what the server adds ({doc['date']})", "",
             f"CPU: {doc['cpu']}; Python {doc['python']}; load average at the start {doc['load_average']:.2f}", "",
             f"Command: `{doc['command']}`", "", "Running beside it (ps aux --sort=-%cpu, top lines):", "", "```",
             *doc["ps"], "```", "",
             "Concurrency 1, batch 1, p50 in ms over n requests. (a) in-process ONNX Runtime with the server's "
             "candidate; (b) tritonclient.grpc, tensors in the request; (c) tritonclient.grpc, input and output in "
             "/dev/shm regions, the client writing its input into the region each time (c' without that write); "
             "(d) one numpy copy of the output. Server adds = served - (a); the target is 0.3 ms + (d).", "",
             "| model | input | served as | output | n | (a) in-process | (b) gRPC | (c) gRPC+shm | (c') infer call only "
             "| (d) copy of output | adds (b) | adds (c) | adds (c') | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        adds = r["server_adds_ms"]
        lines.append(
            f"| {r['model']} | {r['size']}² | {r['served_as']} | {r['output_bytes'] / 2**20:.1f} MiB | "
            f"{r['in_process']['n']} | {r['in_process']['p50_ms']:.2f} | {r['grpc']['p50_ms']:.2f} | "
            f"{r['grpc_shm']['p50_ms']:.2f} | {r['grpc_shm_infer_only']['p50_ms']:.2f} | "
            f"{r['copy_output']['p50_ms']:.2f} | {adds['grpc']:.2f} | {adds['grpc_shm']:.2f} | "
            f"{adds['grpc_shm_infer_only']:.2f} | ≤ {r['target_ms']:.2f} | "
            f"{_met(adds['grpc_shm'], r['target_ms'])} |")
    lines += ["", "The request floor: the same model and client with a 4×4 input (tensors of a few hundred bytes): "
              "what any request costs through the server, whatever its size.", "",
              "| model | (a) in-process 4×4 | (b) gRPC 4×4 | adds |", "|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['model']} | {r['in_process_4x4']['p50_ms']:.2f} | {r['grpc_4x4']['p50_ms']:.2f} | "
                     f"{r['server_adds_ms']['grpc_4x4']:.2f} |")
    lines += ["", "Outputs through shared memory equal the plain answers: " +
              ", ".join(f"{r['model']} {'yes' if r['same_output'] else 'NO'}" for r in doc["rows"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.shared_memory",
                                description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("models/srresnet"),
                   help="a tile-safe image model's folder in repository layout (default: the shipped srresnet)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--requests", type=int, default=30, help="requests per path for the model")
    p.add_argument("--echo-requests", type=int, default=300, help="requests per path for echo4 (0 = skip it)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/shared_memory"))
    args = p.parse_args(argv)
    if not (args.model_dir / CARD_FILE).is_file():
        p.error(f"--model-dir {args.model_dir}: no {CARD_FILE} (a model folder in repository layout)")
    print(f"CPU: {describe()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    # what else was running; command lines cut, as some carry a whole environment
    top = subprocess.run(["ps", "aux", "--sort=-%cpu"], capture_output=True, text=True).stdout.splitlines()[:8]
    ps = [line.split(" --env ")[0][:150] for line in top]
    doc = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": describe(), "machine": cpu_info(),
           "python": platform.python_version(), "load_average": os.getloadavg()[0], "ps": ps,
           "command": " ".join(["python -m ganserve.benchmarks.shared_memory", *(sys.argv[1:] if argv is None else argv)]),
           "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        repo, cache = Path(tmp) / "repo", Path(tmp) / "cache"
        repo.mkdir()
        card = ModelCard.from_dict(json.loads((args.model_dir / CARD_FILE).read_text()))
        if not card.tile_safe:
            print(f"note: {card.name} is not tile-safe", flush=True)
        (repo / card.name).symlink_to(args.model_dir.resolve())
        jobs = [(card.name, repo / card.name, args.requests, card.scale or 1)]
        if args.echo_requests:
            echo_repo = Path(tmp) / "echo-repo"
            jobs.append(("echo4", write_echo4(echo_repo), args.echo_requests, 4))
        for model, folder, count, scale in jobs:
            row = measure(model, folder, folder.parent, cache, args.size, count, scale)
            doc["rows"].append(row)
            adds = row["server_adds_ms"]
            print(f"{model} {args.size}² as {row['served_as']}: in-process {row['in_process']['p50_ms']:.2f} ms, "
                  f"gRPC {row['grpc']['p50_ms']:.2f}, gRPC+shm {row['grpc_shm']['p50_ms']:.2f} "
                  f"(infer call {row['grpc_shm_infer_only']['p50_ms']:.2f}), copy {row['copy_output']['p50_ms']:.2f}; "
                  f"adds {adds['grpc']:.2f} / {adds['grpc_shm']:.2f} ms (target <= {row['target_ms']:.2f}); "
                  f"4x4 floor adds {adds['grpc_4x4']:.2f} ms",
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shared_memory.json").write_text(json.dumps(doc, indent=1))
    (args.out / "shared_memory.md").write_text(markdown(doc))
    print(f"wrote {args.out}/shared_memory.json and shared_memory.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
