"""SIGTERM with requests in flight: the server (a subprocess) finishes all of them, refuses new ones, exits 0."""

from __future__ import annotations

import asyncio
import signal

import grpc
import numpy as np

from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.proto.inference import grpc_service_pb2_grpc as pb_grpc
from ganserve.serving.server import start_subprocess


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
