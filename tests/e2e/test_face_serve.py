"""Face aging end to end: tiny training run, ONNX export, AgeFace and OIP answers = in-process ONNX answers,
`ganserve client age --target 60+ IN OUT`, and a bad age group is INVALID_ARGUMENT."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from PIL import Image

from ganserve.export.exporter import export_checkpoint, read_card
from ganserve.pipeline.cli import main as ganserve_main
from ganserve.serving.client import ImagesClient
from ganserve.serving.server import ServerThread
from ganserve.training.checkpoint import build_from_checkpoint
from ganserve.training.age_groups import AGE_GROUPS
from ganserve.training.data.faces import identity, render, scene
from ganserve.training.applications.face_judges import render_set, save_net, train_net
from ganserve.training.trainer import train
from rgb8 import png
from local_server import chosen_runner, server_config

NAME = "face-aging"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(app, repo, server): a tiny face-aging model trained for 4 steps, exported and served."""
    root = tmp_path_factory.mktemp("face")
    net, facts = train_net("loss_net", render_set("train", 4, 2, seed=0), seconds=60, max_steps=2, batch=8)
    loss_net = save_net(root / "loss_net.pt", net, facts)
    cfg = {"g_channels": 8, "g_blocks": 1, "d_channels": 8, "batch_size": 4, "eval_identities": 2,
           "train_identities": 6, "renders_per_identity": 2, "loss_net": str(loss_net), "age_judge": "",
           "id_judge": "", "sample_every": 0, "ckpt_every": 0, "log_every": 2}
    ckpt = train(NAME, cfg, steps=4, out_dir=root / "run", progress=False)
    export_checkpoint(ckpt, root / "repo", name=NAME)
    config = server_config(root / "repo")
    server = ServerThread(config)
    server.start()
    yield build_from_checkpoint(ckpt), root / "repo", server
    server.stop()


def _faces(count: int) -> np.ndarray:
    """Held-out faces at 35 as uint8 HxWx3."""
    return np.stack([render(identity("held_out", i), 35.0, scene("held_out", i), 64) for i in range(count)])


def _ort(repo: Path, x: np.ndarray, groups: list[int]) -> np.ndarray:
    session = ort.InferenceSession(str(repo / NAME / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["aged"], {"image": x, "age": np.eye(6, dtype=np.float32)[groups]})[0]


def _served_ort(server, x: np.ndarray, groups: list[int]) -> np.ndarray:
    """The same model run in-process on the provider and precision the server chose."""
    return chosen_runner(server, NAME).run({"image": x, "age": np.eye(6, dtype=np.float32)[groups]})["aged"]


def test_card_describes_an_age_conditional_model(served) -> None:
    app, repo, _ = served
    card = read_card(repo / NAME / "1")
    assert card.task == "face_aging" and not card.tile_safe
    image, age = card.inputs
    assert (image.name, image.shape, image.role) == ("image", [3, 64, 64], "image")
    assert (age.name, age.shape, age.role, age.labels) == ("age", [6], "condition", list(AGE_GROUPS))
    assert card.metrics["quality_key"] == "psnr_changed"
    assert card.metrics["psnr_changed"] == pytest.approx(app.evaluate()["psnr_changed"], abs=1e-4)
    assert card.parity["max_abs_error"] < 1e-4


def test_age_face_equals_in_process_onnx(served) -> None:
    app, repo, server = served
    faces = _faces(3)
    x = faces.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    targets = [5, 0, 3]
    expected = _ort(repo, x, targets)
    assert np.allclose(expected, app.predict(x, np.eye(6, dtype=np.float32)[targets]), atol=1e-4)
    expected = _served_ort(server, x, targets)
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        for i, t in enumerate(targets):
            reply = client.age_face(NAME, png(faces[i]), AGE_GROUPS[t])
            got = np.asarray(Image.open(io.BytesIO(reply.image)).convert("RGB")).astype(np.int16)
            want = np.rint(np.clip(expected[i].transpose(1, 2, 0), 0, 1) * 255).astype(np.int16)
            assert (reply.width, reply.height) == (64, 64)
            assert np.abs(got - want).max() <= 1


def test_bad_age_group_is_invalid_argument(served) -> None:
    _, _, server = served
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        for bad in ("70-80", "", "6"):
            with pytest.raises(grpc.RpcError) as err:
                client.age_face(NAME, png(_faces(1)[0]), bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_client_age_command(served, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, repo, server = served
    face = _faces(1)[0]
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(face).save(src)
    rc = ganserve_main(["client", "--server", f"127.0.0.1:{server.port}", "age", "--model", NAME, "--target", "60+",
                        str(src), str(out)])
    assert rc == 0 and "64x64" in capsys.readouterr().out
    got = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)
    want = _served_ort(server, face.transpose(2, 0, 1)[None].astype(np.float32) / 255.0, [5])[0]
    assert np.abs(got - np.rint(np.clip(want.transpose(1, 2, 0), 0, 1) * 255)).max() <= 1
    assert ganserve_main(["client", "--server", f"127.0.0.1:{server.port}", "age", "--model", NAME, "--target",
                          "99+", str(src), str(out)]) == 2


def test_oip_infer_equals_in_process(served) -> None:
    _, repo, server = served
    x = _faces(2).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    age = np.eye(6, dtype=np.float32)[[1, 4]]
    client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        inputs = [tc.InferInput("image", list(x.shape), "FP32"), tc.InferInput("age", list(age.shape), "FP32")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(age)
        got = client.infer(NAME, inputs, outputs=[tc.InferRequestedOutput("aged")]).as_numpy("aged")
    finally:
        client.close()
    assert got.shape == (2, 3, 64, 64) and np.allclose(got, _served_ort(server, x, [1, 4]), atol=1e-5)
