"""The gRPC floor: what any Python gRPC server answering ModelInfer with the same bytes costs, with no model.

`python -m ganserve.benchmarks.grpc_floor --response FILE` serves inference.GRPCInferenceService/ModelInfer on 127.0.0.1 (a free
port, printed as ``floor ready port=N``): it parses each request as ganserve does and answers with FILE's bytes, a
serialized ModelInferResponse the real server gave for the same request. The bench times the same client against
it, so "served minus in-process" splits into this transport floor (HTTP/2 framing, copies into and out of gRPC,
the client's parse) and what ganserve itself adds on top.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
from pathlib import Path

import grpc

from ganserve.serving.proto.inference import grpc_service_pb2 as pb

_READY = re.compile(r"floor ready port=(\d+)")


async def _serve(response: bytes, port: int) -> None:
    async def infer(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        pb.ModelInferRequest.FromString(raw)  # the same parse the real server does
        return response

    limit = 256 << 20
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)])
    handler = grpc.unary_unary_rpc_method_handler(infer)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("inference.GRPCInferenceService",
                                                                          {"ModelInfer": handler})])
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"floor ready port={bound}", flush=True)
    await server.wait_for_termination()


def start(response: bytes, work: Path) -> tuple[subprocess.Popen, int]:
    """Start the floor server in a child process answering with `response`; returns (process, port)."""
    path = work / "floor_response.bin"
    path.write_bytes(response)
    proc = subprocess.Popen([sys.executable, "-m", "ganserve.benchmarks.grpc_floor", "--response", str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = _READY.search(line)
    if not match:
        proc.kill()
        raise RuntimeError(f"gRPC floor server did not start: {line!r}")
    return proc, int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.grpc_floor", description=__doc__.splitlines()[0])
    p.add_argument("--response", type=Path, required=True, help="serialized ModelInferResponse to answer with")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = p.parse_args(argv)
    asyncio.run(_serve(args.response.read_bytes(), args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
