"""Which HTTP server library for the HTTP front: p50 round trip of a 64x64x3 FP32 KServe v2 binary body (49,152 B
plus its JSON header) through aiohttp and through Starlette under uvicorn's Server object, each in one asyncio loop
beside a started grpc.aio server (as ganserve runs them), the client a keep-alive http.client in another process.

    python -m ganserve.benchmarks.http_library_probe [--requests 2000] [--rounds 2]

Needs `pip install starlette uvicorn` besides the project (aiohttp is a dependency). Prints the CPU first.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import socket
import statistics
import sys
import time

import grpc

from ganserve.benchmarks.peaks import cpu_info

PAYLOAD = 64 * 64 * 3 * 4
HEADER = json.dumps({"inputs": [{"name": "x", "shape": [1, 3, 64, 64], "datatype": "FP32",
                                 "parameters": {"binary_data_size": PAYLOAD}}]}).encode()


def _client(port: int, requests: int, answer: mp.Queue) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    body = HEADER + b"x" * PAYLOAD
    headers = {"Inference-Header-Content-Length": str(len(HEADER)), "Content-Type": "application/octet-stream"}
    times = []
    for i in range(requests + 200):  # the first 200 warm up
        start = time.perf_counter()
        connection.request("POST", "/v2/models/m/infer", body, headers)
        reply = connection.getresponse()
        if len(reply.read()) <= PAYLOAD or reply.status != 200:
            raise RuntimeError(f"bad reply {reply.status}")
        if i >= 200:
            times.append(time.perf_counter() - start)
    answer.put(statistics.median(times) * 1e3)


def _measure(port: int, requests: int) -> float:
    context = mp.get_context("spawn")  # no fork beside gRPC's threads
    answer = context.Queue()
    child = context.Process(target=_client, args=(port, requests, answer))
    child.start()
    p50 = answer.get(timeout=600)
    child.join()
    return p50


def _echo(raw: bytes, length: int) -> tuple[bytes, int]:
    json.loads(raw[:length])
    payload = raw[length:]
    out = json.dumps({"outputs": [{"name": "y", "parameters": {"binary_data_size": len(payload)}}]}).encode()
    return out + payload, len(out)


async def _aiohttp() -> tuple[int, object]:
    from aiohttp import web

    async def infer(request: web.Request) -> web.Response:
        body, length = _echo(await request.read(), int(request.headers["Inference-Header-Content-Length"]))
        return web.Response(body=body, headers={"Inference-Header-Content-Length": str(length)},
                            content_type="application/octet-stream")
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v2/models/{m}/infer", infer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return int(runner.addresses[0][1]), runner.cleanup


async def _starlette() -> tuple[int, object]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def infer(request):
        body, length = _echo(await request.body(), int(request.headers["inference-header-content-length"]))
        return Response(body, headers={"Inference-Header-Content-Length": str(length)},
                        media_type="application/octet-stream")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/v2/models/{m}/infer", infer, methods=["POST"])]),
                                           host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)

    async def stop() -> None:
        server.should_exit = True
        await task
    return port, stop


async def main(requests: int, rounds: int) -> None:
    grpc_server = grpc.aio.server()
    grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    for round_ in range(rounds):
        for name, start in (("aiohttp", _aiohttp), ("starlette+uvicorn", _starlette)):
            port, stop = await start()
            p50 = await asyncio.to_thread(_measure, port, requests)
            print(f"round {round_ + 1}  {name:<18} p50 {p50:.3f} ms over {requests} requests", flush=True)
            await stop()
    await grpc_server.stop(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("http_library_probe: needs starlette and uvicorn (pip install starlette uvicorn)", file=sys.stderr)
        sys.exit(2)
    info = cpu_info()
    print(f"CPU: {info.get('cpu_model')} ({info.get('logical_cpus', '?')} logical CPUs; "
          f"{', '.join(info.get('isa', []))})")
    asyncio.run(main(args.requests, args.rounds))
