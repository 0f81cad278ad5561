"""Image API paths driven by the card that no other test covers: Classify on a model whose output is raw logits (the
server applies the softmax), a card's own tile size (used when the request names none, and overridden when it
does), and a model with an input the image API cannot fill (a clear INVALID_ARGUMENT, listed as raw tensors only,
still served over ModelInfer)."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, ModelCard, TensorSpec, triton_config
from ganserve.serving.proto.ganserve.v1 import images_pb2, images_pb2_grpc
from ganserve.serving.server import ServerThread
from local_server import server_config
from serving_models import CLASS_LABELS, _save, classifier_model, sr_model
from test_imaging import png_bytes


def _logits_model():
    """classifier_model without its Softmax: the output is the logits themselves."""
    model = classifier_model()
    graph = model.graph
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    graph.node.remove(softmax)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]))
    return model


def _masked_noise_model():
    """image + 0 * noise: an image model with a second, 'noise' input the image API has no way to fill."""
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = [helper.make_node("Mul", ["noise", "zero"], ["z"]), helper.make_node("Add", ["image", "z"], ["out"])]
    graph = helper.make_graph(
        nodes, "noisy", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"]),
                         helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, "H", "W"])], [zero])
    return helper.make_model(graph)


CARDS = {
    "logits": (_logits_model, ModelCard(
        name="logits", task="classification", architecture="linear",
        inputs=[TensorSpec("pixels", [1, 4, 4], value_range=[0, 1])],
        outputs=[TensorSpec("logits", [3], role="logits", layout="NC", labels=CLASS_LABELS)])),
    "tiled": (sr_model, ModelCard(
        name="tiled", task="super_resolution", architecture="nearest-x2", scale=2, tile_size=8, tile_overlap=2,
        inputs=[TensorSpec("lr", [3, -1, -1], value_range=[-1, 1])],
        outputs=[TensorSpec("hr", [3, -1, -1], value_range=[-1, 1])])),
    "noisy": (_masked_noise_model, ModelCard(
        name="noisy", task="denoise", architecture="add",
        inputs=[TensorSpec("image", [3, -1, -1], value_range=[-1, 1]),
                TensorSpec("noise", [3, -1, -1], role="tensor")],
        outputs=[TensorSpec("out", [3, -1, -1], value_range=[-1, 1])])),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("roles") / "repo"
    for name, (build, card) in CARDS.items():
        _save(build(), root / name / "1" / MODEL_FILE)
        (root / name / CARD_FILE).write_text(card.to_json())
        (root / name / CONFIG_FILE).write_text(triton_config(card))
    return root


@pytest.fixture(scope="module")
def server(repo: Path):
    with ServerThread(server_config(repo)) as thread:
        yield thread


@pytest.fixture()
def images(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield images_pb2_grpc.ImagesStub(channel)


def test_classify_softmaxes_a_logits_output(images, repo: Path) -> None:
    grey = np.array([[30, 60, 90, 120]] * 4, np.uint8)
    reply = images.Classify(images_pb2.ClassifyRequest(model="logits", image=png_bytes(grey), top_k=3), timeout=10)
    session = ort.InferenceSession(str(repo / "logits" / "1" / MODEL_FILE), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"pixels": (grey / 255.0).astype(np.float32)[None, None]})[0][0].astype(np.float64)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probs)
    assert [s.index for s in reply.scores] == list(order)
    assert [s.label for s in reply.scores] == [CLASS_LABELS[i] for i in order]
    assert [s.probability for s in reply.scores] == pytest.approx(list(probs[order]), abs=1e-6)
    assert sum(s.probability for s in reply.scores) == pytest.approx(1.0, abs=1e-6)  # probabilities, not logits


def test_a_cards_own_tile_size_is_used_unless_the_request_names_one(images) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    want = rgb.repeat(2, 0).repeat(2, 1)  # nearest x2: exact whatever the tiling

    def run(options: images_pb2.ImageOptions) -> images_pb2.ImageResponse:
        reply = images.Transform(images_pb2.TransformRequest(model="tiled", image=png_bytes(rgb), options=options),
                                 timeout=10)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(reply.image)).convert("RGB")), want)
        return reply

    # the card's 8 px tiles with a 2 px overlap over 16 px: starts 0, 6, 8 per axis -> 9 runs; the server's own
    # default (128 px) would be 1 run
    assert run(images_pb2.ImageOptions()).tiles == 9
    assert run(images_pb2.ImageOptions(tile_size=16)).tiles == 1  # the request wins over the card
    assert run(images_pb2.ImageOptions(tile_size=0)).tiles == 1  # 0: the whole image at once


def test_an_input_the_image_api_cannot_fill(server, images) -> None:
    with pytest.raises(grpc.RpcError) as info:
        images.Transform(images_pb2.TransformRequest(model="noisy", image=png_bytes(np.zeros((4, 4, 3), np.uint8))),
                         timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "noisy" in info.value.details() and "ModelInfer" in info.value.details()
    listed = {m.name: m for m in images.ListModels(images_pb2.ListModelsRequest(), timeout=10).models}
    assert listed["noisy"].rpc == "" and listed["logits"].rpc == "Classify" and listed["tiled"].rpc == "Transform"
    client = tg.InferenceServerClient(f"127.0.0.1:{server.port}")  # ModelInfer still serves it
    x = np.full((1, 3, 2, 2), 0.25, np.float32)
    inputs = []
    for name in ("image", "noise"):
        tensor = tg.InferInput(name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        inputs.append(tensor)
    assert np.array_equal(client.infer("noisy", inputs).as_numpy("out"), x)
