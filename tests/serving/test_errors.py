"""Every bad input gets a clear status, and the next valid request still succeeds."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from ganserve.serving.model_manager import BatchingOverrides
from ganserve.serving.proto.ganserve.v1 import images_pb2, images_pb2_grpc
from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.proto.inference import grpc_service_pb2_grpc as pb_grpc
from ganserve.serving.server import ServerThread
from local_server import server_config
from test_imaging import bomb_png, png_bytes

GOOD_PNG = png_bytes(np.zeros((8, 8, 3), np.uint8))
NOISE_PNG = png_bytes(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))


@pytest.fixture()
def stubs(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel), images_pb2_grpc.ImagesStub(channel)


def _infer_request(model: str = "sr2", shape=(1, 3, 4, 4), datatype: str = "FP32", nbytes: int | None = None,
                   version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="lr", datatype=datatype, shape=list(shape))
    count = int(np.prod(shape)) * 4 if nbytes is None else nbytes
    request.raw_input_contents.append(b"\0" * count)
    return request


def _code(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value.code(), info.value.details()


def _still_serving(oip, images) -> None:
    reply = oip.ModelInfer(_infer_request(), timeout=10)
    assert list(reply.outputs[0].shape) == [1, 3, 8, 8]
    assert images.SuperResolve(images_pb2.ImageRequest(model="sr2", image=GOOD_PNG), timeout=10).width == 16


@pytest.mark.parametrize("request_kw, code, words", [
    (dict(datatype="FP16"), "INVALID_ARGUMENT", "datatype"),
    (dict(shape=(1, 4, 4, 4)), "INVALID_ARGUMENT", "shape"),
    (dict(shape=(1, 3, 4)), "INVALID_ARGUMENT", "shape"),
    (dict(shape=(9, 3, 4, 4)), "INVALID_ARGUMENT", "batch size"),
    (dict(nbytes=7), "INVALID_ARGUMENT", "bytes"),
    (dict(model="nope"), "NOT_FOUND", "unknown model"),
    (dict(version="7"), "NOT_FOUND", "no loaded version"),
    (dict(model="broken"), "FAILED_PRECONDITION", "onnxruntime cannot load"),
    (dict(shape=(1, 3, 512, 512)), "RESOURCE_EXHAUSTED", ""),  # 3 MB > the fixture's 2 MB message limit
])
def test_oip_errors(stubs, request_kw, code, words) -> None:
    oip, images = stubs
    got, details = _code(oip.ModelInfer, _infer_request(**request_kw))
    assert got.name == code and words in details
    _still_serving(oip, images)


def test_missing_input_and_unknown_output(stubs) -> None:
    oip, images = stubs
    request = pb.ModelInferRequest(model_name="aging")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 3, 2, 2])
    request.raw_input_contents.append(b"\0" * 48)
    got, details = _code(oip.ModelInfer, request)
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "missing input" in details and "age" in details
    request = _infer_request()
    request.outputs.add(name="nothing")
    got, details = _code(oip.ModelInfer, request)
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "unknown output" in details
    _still_serving(oip, images)


@pytest.mark.parametrize("rpc, message, code, words", [
    ("SuperResolve", images_pb2.ImageRequest(model="sr2", image=b"\x89PNG garbage"), "INVALID_ARGUMENT", "undecodable"),
    ("SuperResolve", images_pb2.ImageRequest(model="sr2", image=NOISE_PNG[: len(NOISE_PNG) // 2]), "INVALID_ARGUMENT",
     "truncated"),
    ("SuperResolve", images_pb2.ImageRequest(model="sr2", image=bomb_png(60_000, 60_000)), "RESOURCE_EXHAUSTED", "limit"),
    ("SuperResolve", images_pb2.ImageRequest(model="nope", image=GOOD_PNG), "NOT_FOUND", "unknown model"),
    ("SuperResolve", images_pb2.ImageRequest(model="digits", image=GOOD_PNG), "INVALID_ARGUMENT", "call Classify"),
    ("SuperResolve", images_pb2.ImageRequest(model="broken", image=GOOD_PNG), "FAILED_PRECONDITION", "not available"),
    ("AgeFace", images_pb2.AgeFaceRequest(model="aging", image=GOOD_PNG, target_age="ancient"), "INVALID_ARGUMENT",
     "young, adult, old"),
    ("SuperResolve", images_pb2.ImageRequest(model="sr2", image=GOOD_PNG, options=images_pb2.ImageOptions(
        tile_size=8, tile_overlap=4)), "INVALID_ARGUMENT", "tile_overlap"),
    # sr2 works on multiples of 4: an overlap of 1 rounds up to 4, which a tile of 4 cannot hold (found by the page)
    ("SuperResolve", images_pb2.ImageRequest(model="sr2", image=GOOD_PNG, options=images_pb2.ImageOptions(
        tile_size=4, tile_overlap=1)), "INVALID_ARGUMENT", "tile_overlap 1 up to 4"),
    ("SuperResolve", images_pb2.ImageRequest(model="sr2", image=GOOD_PNG, options=images_pb2.ImageOptions(
        tile_size=3, tile_overlap=0)), "INVALID_ARGUMENT", "tile_size 3 rounds down to 0"),
])
def test_image_api_errors(stubs, rpc, message, code, words) -> None:
    oip, images = stubs
    got, details = _code(getattr(images, rpc), message)
    assert got.name == code and words in details
    _still_serving(oip, images)


@pytest.fixture(scope="module")
def slow_server(repo):
    """Batches wait up to 1.5 s to fill and the queue holds 2 requests: deadlines and queue limits show."""
    thread = ServerThread(server_config(repo, batching=BatchingOverrides(max_queue_delay_us=1_500_000, max_queue_size=2)))
    thread.start()
    yield thread
    thread.stop()


def test_deadline_passes_in_queue_and_request_never_runs(slow_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{slow_server.port}") as channel:
        oip = pb_grpc.GRPCInferenceServiceStub(channel)
        stats = lambda: oip.ModelStatistics(pb.ModelStatisticsRequest(name="sr2"), timeout=5).model_stats[0]  # noqa: E731
        before = stats()
        with pytest.raises(grpc.RpcError) as info:  # 1 s deadline, 1.5 s queue delay: it expires in the queue
            oip.ModelInfer(_infer_request(), timeout=1.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        give_up = time.monotonic() + 5  # the server records the drop at its own deadline; on a busy CPU that lags
        while (after := stats()).inference_stats.fail.count == before.inference_stats.fail.count and time.monotonic() < give_up:
            time.sleep(0.05)
        assert after.inference_stats.fail.count == before.inference_stats.fail.count + 1
        assert after.execution_count == before.execution_count  # dropped from the queue, never run
        start = time.monotonic()
        reply = oip.ModelInfer(_infer_request(), timeout=10)
        assert list(reply.outputs[0].shape) == [1, 3, 8, 8] and time.monotonic() - start < 5


def test_queue_full_is_resource_exhausted(slow_server) -> None:
    async def burst() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{slow_server.port}") as channel:
            oip = pb_grpc.GRPCInferenceServiceStub(channel)

            async def one(size: int) -> grpc.StatusCode:
                try:  # different sizes never share a batch, so each waits its full queue delay
                    await oip.ModelInfer(_infer_request(shape=(1, 3, size, size)), timeout=10)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
            return list(await asyncio.gather(*(one(size) for size in (4, 8, 12, 16))))

    codes = asyncio.run(burst())
    assert codes.count(grpc.StatusCode.OK) == 2 and codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2


@pytest.mark.parametrize("flags, message", [
    (["--port", "99999"], "argument --port: must be 0..65535, got 99999"),
    (["--port", "-5"], "argument --port: must be 0..65535, got -5"),
    (["--metrics-port", "70000"], "argument --metrics-port: must be 0..65535 (or -1 = off), got 70000"),
    (["--grace-seconds", "-1"], "argument --grace-seconds: must be >= 0, got -1"),
])
def test_out_of_range_serve_flags_are_one_line_errors(flags: list[str], message: str, tmp_path,
                                                      capsys: pytest.CaptureFixture) -> None:
    from ganserve.pipeline.cli import main

    with pytest.raises(SystemExit) as exc:  # refused by the parser, before anything is loaded or bound
        main(["serve", "--repo", str(tmp_path), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
