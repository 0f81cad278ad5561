"""Self-ensemble (ImageOptions.ensemble = 8) on a real server: the answer is the average of the 8 flipped and rotated
single passes (each padded to the model's multiple on its own and cropped before it is turned back), through gRPC
(Transform and an alias, whole and tiled) and HTTP; bad values and models it does not apply to are clear refusals;
the memory plan holds the whole output in float and names the largest input that fits."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, ModelCard, TensorSpec, triton_config
from ganserve.core.ensemble import PASSES, inverse, transform
from ganserve.core.memory_cost import card_key
from ganserve.serving.client import ImageOptions, ImagesClient
from ganserve.serving.limits import Limits
from ganserve.serving.server import ServerThread
from local_server import server_config
from role_models import CARDS as ROLE_CARDS
from role_models import gen_model
from serving_models import CARDS as SERVING_CARDS
from serving_models import classifier_model
from test_admission import PROVIDERS, STATED
from test_http import _http
from test_imaging import png_bytes

ROOT = Path(__file__).resolve().parents[2]
MULTIPLE, SCALE = 4, 2
# 21 x 30: neither side a multiple of 4, so every pass pads, and a quarter turn pads the other sides
RGB = np.random.default_rng(3).integers(0, 256, (21, 30, 3), dtype=np.uint8)


def conv_x2_model() -> onnx.ModelProto:
    """x2 super-resolution that is far from flip/rotation-equivariant: a random 3x3 conv to 12 channels, depth to
    space, sigmoid (output in [0, 1])."""
    rng = np.random.default_rng(11)
    weight = rng.normal(0, 0.6, (3 * SCALE * SCALE, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.2, (3 * SCALE * SCALE,)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["lr", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=SCALE, mode="CRD"),
             helper.make_node("Sigmoid", ["d"], ["sr"])]
    graph = helper.make_graph(nodes, "convx2", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H2", "W2"])],
                              [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph)
    model.opset_import[0].version = 17
    model.ir_version = 8
    return model


def conv_card(name: str, tile_safe: bool = True) -> ModelCard:
    return ModelCard(name=name, task="super_resolution", architecture="conv-x2", scale=SCALE,
                     spatial_multiple=MULTIPLE, tile_safe=tile_safe,
                     inputs=[TensorSpec("lr", [3, -1, -1], value_range=[0.0, 1.0])],
                     outputs=[TensorSpec("sr", [3, -1, -1], value_range=[0.0, 1.0])],
                     memory={card_key(p, "fp32"): dict(STATED) for p in PROVIDERS})


def make_repo(root: Path) -> Path:
    """conv (tile-safe), conv-whole (the same network, its card not tile-safe), a classifier and a generator."""
    repo = root / "repo"
    models = {"conv": (conv_x2_model(), conv_card("conv")), "conv-whole": (conv_x2_model(), conv_card("conv-whole", False)),
              "digits": (classifier_model(), SERVING_CARDS["digits"]), "gen": (gen_model(), ROLE_CARDS["gen"])}
    for name, (model, card) in models.items():
        model.opset_import[0].version, model.ir_version = 17, 8
        (repo / name / "1").mkdir(parents=True)
        onnx.save(model, str(repo / name / "1" / MODEL_FILE))
        (repo / name / CARD_FILE).write_text(card.to_json())
        (repo / name / CONFIG_FILE).write_text(triton_config(card))
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("ensemble"))


@pytest.fixture(scope="module")
def server(repo: Path):
    thread = ServerThread(server_config(repo, limits=Limits(max_memory_mib=300)))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture()
def client(server):
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=60) as images:
        yield images


def _pad(x: np.ndarray) -> np.ndarray:
    """Bottom/right padding to the multiple, as the server pads (reflect; edge where the image is too small)."""
    ph, pw = -x.shape[2] % MULTIPLE, -x.shape[3] % MULTIPLE
    mode = "reflect" if ph < x.shape[2] and pw < x.shape[3] else "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


def expected_pixels(repo: Path, rgb: np.ndarray, per_pass_padding: bool = True) -> np.ndarray:
    """The ensemble computed here with onnxruntime: each of the 8 turned images padded, run, cropped to its own
    size x2, turned back, averaged, to 8 bits. ``per_pass_padding`` False pads once before turning (wrong)."""
    session = ort.InferenceSession(str(repo / "conv" / "1" / MODEL_FILE), providers=["CPUExecutionProvider"])
    x = (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    outputs = []
    for k in range(PASSES):
        if per_pass_padding:
            turned = np.ascontiguousarray(transform(x, k))
            y = session.run(None, {"lr": _pad(turned)})[0][:, :, : turned.shape[2] * SCALE, : turned.shape[3] * SCALE]
            outputs.append(inverse(y, k))
        else:
            y = session.run(None, {"lr": np.ascontiguousarray(transform(_pad(x), k))})[0]
            outputs.append(inverse(y, k)[:, :, : x.shape[2] * SCALE, : x.shape[3] * SCALE])
    mean = np.mean(outputs, axis=0, dtype=np.float64)
    return np.rint(np.clip(mean[0].transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal up to one 8-bit level (float sums in another order may round the other way)."""
    return got.shape == want.shape and int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1


def test_grpc_transform_and_an_alias_answer_the_average_of_the_eight_passes(repo: Path, client) -> None:
    want = expected_pixels(repo, RGB)
    plain = client.transform("conv", png_bytes(RGB), options=ImageOptions(tile_size=0))
    whole = client.transform("conv", png_bytes(RGB), options=ImageOptions(tile_size=0, ensemble=8))
    assert (whole.width, whole.height, whole.tiles, plain.tiles) == (60, 42, PASSES, 1)
    assert _close(_decode(whole.image), want)
    # the test can tell: one pass and padding once before turning both give other pictures
    assert not _close(_decode(plain.image), want)
    assert not _close(expected_pixels(repo, RGB, per_pass_padding=False), want)
    # tiled (20-pixel tiles, 8 overlap): each pass is 2 x 2 tiles of the padded 24 x 32 image (or 32 x 24 turned)
    tiled = client.super_resolve("conv", png_bytes(RGB), ImageOptions(tile_size=20, tile_overlap=8, ensemble=8))
    assert tiled.tiles == PASSES * 4 and _close(_decode(tiled.image), want)
    assert tiled.timing.infer_ms > 0
    for off in (0, 1):  # 0 and 1 are one pass, as if unset
        same = client.transform("conv", png_bytes(RGB), options=ImageOptions(tile_size=0, ensemble=off))
        assert same.tiles == 1 and same.image == plain.image


def test_http_transform_takes_ensemble_as_a_query_option(repo: Path, server) -> None:
    code, headers, body = _http(server, "/v1/models/conv/transform?ensemble=8&tile_size=0", png_bytes(RGB))
    assert code == 200, body
    assert headers["X-Ganserve-Runs"] == str(PASSES) and _close(_decode(body), expected_pixels(repo, RGB))


@pytest.mark.parametrize("value", [3, -1])
def test_a_bad_value_is_invalid_argument_naming_the_allowed_values(server, client, value: int) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.transform("conv", png_bytes(RGB), options=ImageOptions(ensemble=value))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"ensemble must be 0 or 1 (off) or 8 (the eight flips and rotations), got {value}" in info.value.details()
    code, _, body = _http(server, f"/v1/models/conv/transform?ensemble={value}", png_bytes(RGB))
    assert code == 400 and "0 or 1 (off) or 8" in json.loads(body)["error"]
    code, _, body = _http(server, "/v1/models/conv/transform?ensemble=eight", png_bytes(RGB))
    assert code == 400 and "must be an integer" in json.loads(body)["error"]


def test_models_it_does_not_apply_to_are_refused_saying_why(server, client) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.transform("conv-whole", png_bytes(RGB), options=ImageOptions(ensemble=8))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not tile-safe" in info.value.details() and "send ensemble 0" in info.value.details()
    code, _, body = _http(server, "/v1/models/conv-whole/transform?ensemble=8", png_bytes(RGB))
    assert code == 400 and "not tile-safe" in json.loads(body)["error"]
    assert client.transform("conv-whole", png_bytes(RGB), options=ImageOptions(ensemble=0)).tiles == 1
    with pytest.raises(grpc.RpcError) as info:
        client.generate("gen", 1, "rising", ImageOptions(ensemble=8))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "no input image" in info.value.details()
    code, _, body = _http(server, "/v1/models/gen/generate?condition=rising&ensemble=8")
    assert code == 400 and "no input image" in json.loads(body)["error"]
    code, _, body = _http(server, "/v1/models/digits/classify?ensemble=8", png_bytes(RGB[:4, :4]))
    assert code == 400 and "'ensemble'" in json.loads(body)["error"]
    with pytest.raises(grpc.RpcError) as info:  # a classifier is not served by Transform at all
        client.transform("digits", png_bytes(RGB[:4, :4]), options=ImageOptions(ensemble=8))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Classify" in info.value.details()


def test_an_ensemble_that_cannot_fit_the_budget_names_the_largest_input_that_does(server) -> None:
    big = png_bytes(np.full((1000, 1400, 3), 90, np.uint8))
    code, _, body = _http(server, "/v1/models/conv/transform?ensemble=8", big)
    assert code == 413, body
    message = json.loads(body)["error"]
    assert "with ensemble 8 a 1400x1000 image" in message and "300 MiB" in message and "band by band" in message
    side = int(message.split("largest input with ensemble: about ")[1].split("x")[0])
    assert 100 < side and side * side < 1400 * 1000, message
    code, headers, body = _http(server, "/v1/models/conv/transform", big)  # one pass, blended band by band: fits
    assert code == 200 and (headers["X-Ganserve-Width"], headers["X-Ganserve-Height"]) == ("2800", "2000"), body


def test_the_cli_client_passes_ensemble(repo: Path, server, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    src.write_bytes(png_bytes(RGB))
    cmd = [sys.executable, "-m", "ganserve.pipeline.cli", "client", "--server", f"127.0.0.1:{server.port}", "sr",
           str(src), str(dst), "--model", "conv", "--tile-size", "0", "--ensemble", "8"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "(8 run(s))" in done.stdout and _close(_decode(dst.read_bytes()), expected_pixels(repo, RGB))
    bad = subprocess.run(cmd[:-1] + ["3"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "ensemble must be 0 or 1 (off) or 8" in bad.stderr and "Traceback" not in bad.stderr
