"""SIGTERM with requests in flight: the server (a subprocess) finishes all of them, refuses new ones, exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import socket

import grpc
import numpy as np
import pytest

from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.proto.inference import grpc_service_pb2_grpc as pb_grpc
from ganserve.serving.server import start_subprocess
from test_imaging import png_bytes


def _request(value: float, size: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="sr2")
    request.inputs.add(name="lr", datatype="FP32", shape=[1, 3, size, size])
    request.raw_input_contents.append(np.full((1, 3, size, size), value, np.float32).tobytes())
    return request


def test_sigterm_drains_in_flight_requests(repo) -> None:
    # Requests of different sizes wait 0.8 s each in the queue, so all are in flight when SIGTERM arrives.
    proc, port, _, _ = start_subprocess(repo, ["--max-queue-delay-us", "800000", "--grace-seconds", "20",
                                            "--intra-op-threads", "1"])
    try:
        async def scenario() -> tuple[list[float], grpc.StatusCode | None]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                oip = pb_grpc.GRPCInferenceServiceStub(channel)
                await oip.ServerReady(pb.ServerReadyRequest(), timeout=10)
                calls = [asyncio.ensure_future(oip.ModelInfer(_request(i / 10, 4 + 4 * i), timeout=30)) for i in range(6)]
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                late: grpc.StatusCode | None = None
                try:
                    await oip.ModelInfer(_request(0.9, 4), timeout=5)
                except grpc.aio.AioRpcError as exc:
                    late = exc.code()
                replies = await asyncio.gather(*calls)
            values = [float(np.frombuffer(r.raw_output_contents[0], np.float32)[0]) for r in replies]
            return values, late

        values, late = asyncio.run(scenario())
        assert np.allclose(values, [i / 10 for i in range(6)])
        assert late == grpc.StatusCode.UNAVAILABLE
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_drains_in_flight_http_requests(repo) -> None:
    """The same over KServe v2 REST and the HTTP image API: every request accepted before SIGTERM is answered."""
    import aiohttp

    proc, _, _, http_port = start_subprocess(repo, ["--max-queue-delay-us", "800000", "--grace-seconds", "20",
                                                    "--intra-op-threads", "1"])
    base = f"http://127.0.0.1:{http_port}"
    try:
        async def scenario() -> tuple[list[float], list[int]]:
            async with aiohttp.ClientSession() as session:
                async with session.get(base + "/v2/health/ready") as ready:
                    assert ready.status == 200

                async def infer(value: float, size: int) -> float:
                    data = np.full((1, 3, size, size), value, np.float32).tobytes()
                    header = json.dumps({"inputs": [{"name": "lr", "shape": [1, 3, size, size], "datatype": "FP32",
                                                     "parameters": {"binary_data_size": len(data)}}],
                                         "parameters": {"binary_data_output": True}}).encode()
                    async with session.post(base + "/v2/models/sr2/infer", data=header + data,
                                            headers={"Inference-Header-Content-Length": str(len(header))}) as r:
                        body = await r.read()
                        assert r.status == 200, body
                        length = int(r.headers["Inference-Header-Content-Length"])
                        return float(np.frombuffer(body[length:length + 4], np.float32)[0])

                async def image(size: int) -> int:
                    picture = png_bytes(np.full((size, size, 3), 128, np.uint8))
                    async with session.post(base + "/v1/models/sr2/transform", data=picture) as r:
                        await r.read()
                        return r.status

                calls = [asyncio.ensure_future(infer(i / 10, 4 + 4 * i)) for i in range(4)]
                pictures = [asyncio.ensure_future(image(size)) for size in (20, 28)]
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                values = await asyncio.gather(*calls)
                codes = await asyncio.gather(*pictures)
            return list(values), list(codes)

        values, codes = asyncio.run(scenario())
        assert np.allclose(values, [i / 10 for i in range(4)]) and codes == [200, 200]
        assert proc.wait(timeout=30) == 0
        with pytest.raises(OSError):  # gone: nothing listens any more
            socket.create_connection(("127.0.0.1", http_port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
