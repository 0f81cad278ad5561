"""KServe v2 / OIP over gRPC, driven by tritonclient.grpc unchanged."""

from __future__ import annotations

import queue

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException


@pytest.fixture()
def client(server):
    c = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


def _input(name: str, array: np.ndarray, datatype: str = "FP32") -> tc.InferInput:
    tensor = tc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_liveness_and_metadata(client, server) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sr2") and client.is_model_ready("digits")
    assert not client.is_model_ready("broken") and not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta.name == "ganserve" and "model_repository" in meta.extensions
    model = client.get_model_metadata("aging")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("image", "FP32", [-1, 3, -1, -1]),
                                                                          ("age", "FP32", [-1, 3])]
    assert model.versions == ["1"] and model.platform == "onnxruntime_onnx"


def test_model_config(client) -> None:
    config = client.get_model_config("digits").config
    assert config.name == "digits" and config.max_batch_size == 8
    assert [(o.name, list(o.dims)) for o in config.output] == [("probs", [3])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 0  # contract default: natural batching


def test_infer_matches_in_process_onnxruntime(client, repo) -> None:
    rng = np.random.default_rng(1)
    image = rng.uniform(-1, 1, (2, 3, 6, 5)).astype(np.float32)
    age = np.eye(3, dtype=np.float32)[[2, 0]]
    result = client.infer("aging", [_input("image", image), _input("age", age)],
                          outputs=[tc.InferRequestedOutput("aged")])
    session = ort.InferenceSession(str(repo / "aging" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"image": image, "age": age})[0]
    got = result.as_numpy("aged")
    assert got.shape == (2, 3, 6, 5) and np.array_equal(got, expected)
    assert np.allclose(got[0], image[0] + 0.5) and np.allclose(got[1], image[1] - 0.5)
    assert result.get_response().model_version == "1"


def test_typed_contents_in_and_out(client, server) -> None:
    from ganserve.serving.proto.inference import grpc_service_pb2 as pb
    from ganserve.serving.proto.inference import grpc_service_pb2_grpc as pb_grpc
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="digits")
        request.inputs.add(name="pixels", datatype="FP32", shape=[1, 1, 4, 4]).contents.fp32_contents.extend([1.0] * 16)
        out = request.outputs.add(name="probs")
        out.parameters["binary_data"].bool_param = False
        response = stub.ModelInfer(request, timeout=10)
    probs = np.array(response.outputs[0].contents.fp32_contents)
    logits = np.array([10.0, 5.0, 0.0])
    assert not response.raw_output_contents
    assert np.allclose(probs, np.exp(logits) / np.exp(logits).sum(), atol=1e-6)


def test_streaming_in_order_with_errors_inline(client) -> None:
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        inputs = [np.full((1, 3, 4, 4), v, np.float32) for v in (0.1, 0.2, 0.3)]
        for i, x in enumerate(inputs):
            client.async_stream_infer("sr2", [_input("lr", x)], request_id=str(i))
        client.async_stream_infer("nope", [_input("lr", inputs[0])], request_id="bad")
        client.async_stream_infer("sr2", [_input("lr", inputs[2])], request_id="after")
        got = [results.get(timeout=10) for _ in range(5)]
    finally:
        client.stop_stream()
    ok = [(r.get_response().id, float(r.as_numpy("hr")[0, 0, 0, 0])) for r, e in got if e is None]
    assert [i for i, _ in ok] == ["0", "1", "2", "after"]
    assert np.allclose([v for _, v in ok], [0.1, 0.2, 0.3, 0.3])
    errors = [e for r, e in got if e is not None]
    assert len(errors) == 1 and "NOT_FOUND" in str(errors[0])


def test_statistics_count_requests(client) -> None:
    before = client.get_inference_statistics("sr2").model_stats[0]
    client.infer("sr2", [_input("lr", np.zeros((3, 3, 4, 4), np.float32))])
    after = client.get_inference_statistics("sr2").model_stats[0]
    assert after.inference_count - before.inference_count == 3
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns


def test_repository_index_and_control_refused(client) -> None:
    index = {m.name: (m.state, m.reason) for m in client.get_model_repository_index().models}
    assert index["sr2"] == ("READY", "") and index["broken"][0] == "UNAVAILABLE"
    assert "onnxruntime cannot load" in index["broken"][1]
    with pytest.raises(InferenceServerException, match="allow-model-control") as info:
        client.load_model("sr2")
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert client.is_model_ready("sr2")


def test_serialized_response_equals_the_message_serialization() -> None:
    """The single-copy wire answer parses to exactly what filling raw_output_contents would have sent."""
    from ganserve.serving.proto.inference import grpc_service_pb2 as pb
    from ganserve.serving.tensors import NUMPY, datatype_of, serialized_response, varint

    def by_the_message(response: pb.ModelInferResponse, outputs: dict, wanted: list[tuple[str, bool]]) -> None:
        """The protocol written out with protobuf's own API: raw contents for all when any is raw, else typed."""
        any_raw = any(raw for _, raw in wanted)
        for name, _ in wanted:
            array, dtype = outputs[name], datatype_of(outputs[name])
            tensor = response.outputs.add(name=name, datatype=dtype, shape=list(array.shape))
            if any_raw:
                response.raw_output_contents.append(np.ascontiguousarray(array, NUMPY[dtype]).tobytes())
            else:
                tensor.contents.fp32_contents.extend(array.ravel().tolist())

    rng = np.random.default_rng(3)
    big = rng.standard_normal((1, 3, 64, 80)).astype(np.float32)
    outputs = {"sr": big[:, :, :, ::2], "mask": rng.integers(0, 255, (1, 1, 9, 7)).astype(np.uint8),
               "probs": rng.random((2, 3)).astype(np.float32)}  # a strided view, a uint8, a small float
    for wanted in ([("sr", True), ("mask", True), ("probs", True)], [("probs", False)], [("mask", True)]):
        fields = dict(model_name="m", model_version="3", id="req-7")
        expected = pb.ModelInferResponse(**fields)
        by_the_message(expected, outputs, wanted)
        got = pb.ModelInferResponse.FromString(serialized_response(pb.ModelInferResponse(**fields), outputs, wanted))
        assert got == expected
    for raw_outputs in ([("sr", True), ("mask", True), ("probs", True)], [("sr", True)]):
        answer = pb.ModelInferResponse.FromString(serialized_response(pb.ModelInferResponse(), outputs, raw_outputs))
        for tensor, raw in zip(answer.outputs, answer.raw_output_contents):
            assert np.array_equal(np.frombuffer(raw, outputs[tensor.name].dtype).reshape(tensor.shape), outputs[tensor.name])
    assert [varint(n) for n in (0, 1, 127, 128, 300, 2**32)] == [b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02",
                                                                b"\x80\x80\x80\x80\x10"]


def test_a_body_that_is_not_protobuf_is_invalid_argument(client, server) -> None:
    """Bytes that do not parse as the request message get INVALID_ARGUMENT with the reason, and the server goes on."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for method in ("ModelInfer", "ModelMetadata", "ServerLive"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            for body in (b"\xff\xff\xff", b"\x0a\x05ab", b"\x12\xff\xff\xff\xff\x0f"):
                with pytest.raises(grpc.RpcError) as err:
                    call(body, timeout=10)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "not a valid" in err.value.details() and "protobuf" in err.value.details()
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        with pytest.raises(grpc.RpcError) as err:
            list(stream(iter([b"\xff\xff\xff"]), timeout=10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    image = np.zeros((1, 3, 4, 4), np.float32)
    result = client.infer("aging", [_input("image", image), _input("age", np.eye(3, dtype=np.float32)[[1]])])
    assert result.as_numpy("aged").shape == (1, 3, 4, 4)
