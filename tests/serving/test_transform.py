"""ganserve.v1.Images.Transform: one image-to-image RPC driven by the card's roles, its aliases, ListModels'
conditions, every bad request's status, and `ganserve client transform` (real server, real client, real ONNX)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from ganserve.serving.client import ImageOptions, ImagesClient
from ganserve.serving.proto.ganserve.v1 import images_pb2 as pb
from ganserve.serving.server import ServerThread
from local_server import server_config
from role_models import GEN_PIXELS, STRENGTHS, TONES, make_role_repo
from test_imaging import png_bytes

ROOT = Path(__file__).resolve().parents[2]
# multiples of 4 keep 0.75 * pixel whole, so no expected value sits on a rounding tie
RGB = (np.arange(6 * 5 * 3, dtype=np.int64).reshape(6, 5, 3) * 4 % 256).astype(np.uint8)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    thread = ServerThread(server_config(make_role_repo(tmp_path_factory.mktemp("roles"))))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture()
def client(server):
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=30) as images:
        yield images


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def tinted(rgb: np.ndarray, tone: str, strength: str = "low") -> np.ndarray:
    """What the tint model answers in 8 bits: 0.75 x + 0.25 on the tone's channel + 0.125 when strong."""
    lift = np.eye(3)[TONES.index(tone)] * 0.25 + 0.125 * STRENGTHS.index(strength)
    return np.rint(np.clip(0.75 * rgb / 255.0 + lift, 0, 1) * 255).astype(np.uint8)


def test_each_condition_choice_gives_its_own_output(client) -> None:
    outputs = {}
    for tone in TONES:
        for strength in STRENGTHS:
            reply = client.transform("tint", png_bytes(RGB), {"tone": tone, "strength": strength})
            got = _decode(reply.image)
            assert np.array_equal(got, tinted(RGB, tone, strength)), (tone, strength)
            assert (reply.width, reply.height, reply.tiles, reply.model) == (5, 6, 1, "tint")
            outputs[tone, strength] = got.tobytes()
    assert len(set(outputs.values())) == 6  # every choice changes the picture
    # an index as text picks the same choice; a condition the card gives a default for may be left out
    by_index = client.transform("tint", png_bytes(RGB), {"tone": "2", "strength": "1"})
    assert _decode(by_index.image).tobytes() == outputs["blue", "high"]
    defaulted = client.transform("tint", png_bytes(RGB), {"tone": "GREEN"})
    assert _decode(defaulted.image).tobytes() == outputs["green", "low"]


def test_mask_input_and_image_output_come_from_roles(client) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (37, 29, 3), dtype=np.uint8)
    mask = np.zeros((37, 29), np.uint8)
    mask[5:20, 3:11] = 255
    expected = rgb.copy()
    expected[mask == 255] = 255
    whole = client.transform("masked", png_bytes(rgb), mask=png_bytes(mask), options=ImageOptions(tile_size=0))
    tiled = client.transform("masked", png_bytes(rgb), mask=png_bytes(mask),
                             options=ImageOptions(tile_size=16, tile_overlap=4))
    assert whole.tiles == 1 and tiled.tiles > 4
    # the picture is the output whose role is "image" ("filled"), not the first output ("attention")
    assert np.array_equal(_decode(whole.image), expected) and np.array_equal(_decode(tiled.image), expected)


def test_aliases_answer_byte_identical_to_transform(client) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (20, 14, 3), dtype=np.uint8)
    data, options = png_bytes(rgb), ImageOptions(tile_size=8, tile_overlap=2)
    generic = client.transform("sr2", data, options=options).image
    assert np.array_equal(_decode(generic), rgb.repeat(2, 0).repeat(2, 1))
    assert client.super_resolve("sr2", data, options).image == generic
    assert client.translate("sr2", data, options).image == generic
    assert client.derain("sr2", data, options).image == generic
    for age in ("young", "old"):
        aged = client.age_face("aging", data, age).image
        assert aged == client.transform("aging", data, {"age": age}).image
    assert client.age_face("aging", data, "young").image != client.age_face("aging", data, "old").image


def test_image_request_bytes_read_as_a_transform_request() -> None:
    options = pb.ImageOptions(output_format=pb.JPEG, tile_size=0)
    old = pb.ImageRequest(model="sr2", image=b"png", options=options, model_version="3")
    new = pb.TransformRequest.FromString(old.SerializeToString())
    assert (new.model, new.image, new.options, new.model_version) == ("sr2", b"png", options, "3")
    assert not new.conditions and not new.mask


def test_generate_takes_named_conditions(client) -> None:
    for index, label in enumerate(["rising", "falling"]):
        named = client.generate("gen", seed=3, conditions={"class": label})
        assert named.image == client.generate("gen", seed=3, condition=label).image
        assert named.image == client.generate("gen", seed=3, condition=label, conditions={"class": label}).image
        want = np.rint(GEN_PIXELS[index].reshape(2, 2) * 255).astype(np.uint8)
        assert np.array_equal(_decode(named.image), want)


def test_classify_is_driven_by_roles(client) -> None:
    reply = client.classify("digits", png_bytes(np.full((4, 4, 3), 255, np.uint8)), top_k=1)
    assert [s.label for s in reply.scores] == ["bright"]


def test_list_models_reports_conditions_roles_and_rpc(client) -> None:
    models = {m.name: m for m in client.list_models().models}
    tint = models["tint"]
    assert tint.task == "tinting" and tint.rpc == "Transform"
    assert [(c.name, list(c.choices), c.default, c.required) for c in tint.conditions] == [
        ("tone", TONES, "", True), ("strength", STRENGTHS, "low", False)]
    assert list(tint.condition_labels) == TONES  # the older field: the first condition's choices
    assert [(t.name, t.role, t.datatype, list(t.shape)) for t in tint.inputs] == [
        ("image", "image", "FP32", [3, -1, -1]), ("tone", "condition", "FP32", [3]),
        ("strength", "condition", "FP32", [2])]
    assert [(t.name, t.role) for t in models["masked"].outputs] == [("attention", "mask"), ("filled", "image")]
    assert [(c.name, list(c.choices)) for c in models["aging"].conditions] == [("age", ["young", "adult", "old"])]
    rpcs = {name: m.rpc for name, m in models.items()}
    assert rpcs == {"tint": "Transform", "masked": "Transform", "sr2": "Transform", "aging": "Transform",
                    "digits": "Classify", "gen": "Generate", "embed": ""}
    assert not models["sr2"].conditions and models["sr2"].inputs[0].role == "image"


GOOD = png_bytes(RGB)
MASK = png_bytes(np.zeros((6, 5), np.uint8))


@pytest.mark.parametrize("rpc, request_, words", [
    ("Transform", pb.TransformRequest(model="tint", image=GOOD, conditions={"tone": "red", "mood": "calm"}),
     ["model 'tint' has no condition 'mood'", "its conditions: tone, strength"]),
    ("Transform", pb.TransformRequest(model="tint", image=GOOD, conditions={"strength": "high"}),
     ["model 'tint' needs a condition for 'tone'", "one of: red, green, blue"]),
    ("Transform", pb.TransformRequest(model="tint", image=GOOD, conditions={"tone": "purple"}),
     ["model 'tint': unknown condition 'purple' for 'tone'", "one of: red, green, blue"]),
    ("Transform", pb.TransformRequest(model="tint", image=GOOD, conditions={"tone": "3"}),
     ["unknown condition '3' for 'tone'"]),
    ("Transform", pb.TransformRequest(model="sr2", image=GOOD, conditions={"tone": "red"}),
     ["model 'sr2' has no condition 'tone'", "it takes no conditions"]),
    ("Transform", pb.TransformRequest(model="sr2", image=GOOD, mask=MASK),
     ["model 'sr2' has no mask input", "lr (image)", "send no mask"]),
    ("Transform", pb.TransformRequest(model="masked", image=GOOD),
     ["model 'masked' needs a mask image for its input 'mask'"]),
    ("Transform", pb.TransformRequest(model="masked", image=GOOD, mask=png_bytes(np.zeros((5, 6), np.uint8))),
     ["model 'masked': the mask is 6x5 but the image is 5x6"]),
    ("Transform", pb.TransformRequest(model="embed", image=GOOD),
     ["model 'embed'", "means (tensor)", "needs an image input and an image output", "call it through ModelInfer"]),
    ("Transform", pb.TransformRequest(model="digits", image=GOOD),
     ["model 'digits'", "is not served by Transform", "call Classify"]),
    ("Transform", pb.TransformRequest(model="gen", image=GOOD), ["model 'gen'", "call Generate"]),
    ("SuperResolve", pb.ImageRequest(model="tint", image=GOOD),
     ["model 'tint' needs conditions (tone) that SuperResolve cannot carry", "call Transform with conditions"]),
    ("SuperResolve", pb.ImageRequest(model="digits", image=GOOD), ["is not served by SuperResolve", "call Classify"]),
    ("AgeFace", pb.AgeFaceRequest(model="sr2", image=GOOD, target_age="old"),
     ["model 'sr2' has no condition input, so target_age 'old' cannot be applied"]),
    ("AgeFace", pb.AgeFaceRequest(model="tint", image=GOOD, target_age="red"),
     ["model 'tint' has 2 condition inputs (tone, strength)"]),
    ("AgeFace", pb.AgeFaceRequest(model="aging", image=GOOD),
     ["model 'aging' needs a target age for 'age'", "one of: young, adult, old"]),
    ("Classify", pb.ClassifyRequest(model="sr2", image=GOOD), ["is not served by Classify", "call Transform"]),
    ("Generate", pb.GenerateRequest(model="gen", condition="rising", conditions={"class": "falling"}),
     ["model 'gen': condition 'rising' and conditions['class'] = 'falling' disagree"]),
    ("Generate", pb.GenerateRequest(model="gen"), ["model 'gen' needs a condition for 'class'", "rising, falling"]),
    ("Generate", pb.GenerateRequest(model="sr2"), ["is not served by Generate", "call Transform"]),
])
def test_bad_requests_are_invalid_argument(server, client, rpc: str, request_, words: list[str]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        getattr(client.stub, rpc)(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in info.value.details()
    reply = client.transform("tint", GOOD, {"tone": "red"})  # the server still answers the next request
    assert np.array_equal(_decode(reply.image), tinted(RGB, "red"))


def _cli(server, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ganserve.pipeline.cli", "client", "--server", f"127.0.0.1:{server.port}", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cli_transform_writes_the_picture(server, tmp_path: Path) -> None:
    src, dst, mask = tmp_path / "in.png", tmp_path / "out.png", tmp_path / "mask.png"
    src.write_bytes(GOOD)
    done = _cli(server, "transform", str(src), str(dst), "--model", "tint", "--condition", "tone=green",
                "--condition", "strength=high")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{dst}: 5x6, ") and "1 run(s)" in done.stdout
    assert np.array_equal(_decode(dst.read_bytes()), tinted(RGB, "green", "high"))
    white = np.zeros((6, 5), np.uint8)
    white[:, 2:] = 255
    mask.write_bytes(png_bytes(white))
    assert _cli(server, "transform", str(src), str(dst), "--model", "masked", "--mask", str(mask)).returncode == 0
    assert np.array_equal(_decode(dst.read_bytes())[:, 2:], np.full((6, 3, 3), 255, np.uint8))
    assert np.array_equal(_decode(dst.read_bytes())[:, :2], RGB[:, :2])


@pytest.mark.parametrize("args, words", [
    (["--condition", "tone=purple"], "INVALID_ARGUMENT: model 'tint': unknown condition 'purple'"),
    (["--condition", "tone"], "--condition 'tone': write NAME=CHOICE"),
    (["--condition", "tone=red", "--condition", "tone=blue"], "--condition 'tone' given twice"),
])
def test_cli_transform_errors_are_one_line(server, tmp_path: Path, args: list[str], words: str) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(GOOD)
    done = _cli(server, "transform", str(src), str(tmp_path / "out.png"), "--model", "tint", *args)
    assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


def test_cli_list_shows_rpc_conditions_and_choices(server) -> None:
    lines = {line.split("\t")[0]: line for line in _cli(server, "list").stdout.splitlines()}
    assert lines["tint"].startswith("tint\tv1\tREADY\ttinting\t")
    assert lines["tint"].endswith("\tTransform\ttone=red|green|blue; strength=low|high (default low)")
    assert lines["gen"].endswith("\tGenerate\tclass=rising|falling")
    assert lines["embed"].endswith("\tModelInfer") and lines["digits"].endswith("\tClassify")
