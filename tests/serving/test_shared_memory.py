"""The system shared-memory extension, driven by tritonclient.grpc and tritonclient.http unchanged, with regions made
by tritonclient.utils.shared_memory in /dev/shm: answers equal the plain requests', region status and unregister,
and every bad region is a clear error after which the server still serves."""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from ganserve.serving import status
from ganserve.serving.server import ServerThread
from ganserve.serving.shared_memory import SHM_DIR, SharedMemory, Slot, enabled_for
from local_server import server_config

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs POSIX shared memory in /dev/shm")
with warnings.catch_warnings():  # tritonclient's own utilities, as a client imports them (setuptools < 81: locks/tools.in)
    warnings.simplefilter("ignore", UserWarning)  # its import of pkg_resources warns that the module is deprecated
    import tritonclient.utils.shared_memory as shm
IMAGE = np.random.default_rng(7).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
IN_BYTES, OUT_BYTES = IMAGE.nbytes, IMAGE.nbytes * 4  # sr2 doubles height and width


@pytest.fixture()
def region():
    """A fresh shared-memory object of IN_BYTES + OUT_BYTES holding IMAGE at offset 0, destroyed afterwards:
    yields (handle, region name, key)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    key = f"/ganserve_test_{name}"
    handle = shm.create_shared_memory_region(name, key, IN_BYTES + OUT_BYTES)
    shm.set_shared_memory_region(handle, [IMAGE])
    yield handle, name, key
    shm.destroy_shared_memory_region(handle)


def _client(module, port: int):
    """A tritonclient of `module` on the session's server; every region it left is unregistered afterwards."""
    client = module.InferenceServerClient(f"127.0.0.1:{port}")
    yield client
    client.unregister_system_shared_memory()
    client.close()


@pytest.fixture()
def grpc_client(server):
    yield from _client(tc, server.port)


@pytest.fixture()
def http_client(server):
    yield from _client(th, server.http_port)


def _plain(client, module) -> np.ndarray:
    tensor = module.InferInput("lr", list(IMAGE.shape), "FP32")
    tensor.set_data_from_numpy(IMAGE)
    return client.infer("sr2", [tensor]).as_numpy("hr")


def _shared(client, module, name: str, out_offset: int = IN_BYTES, out_size: int = OUT_BYTES,
            in_size: int = IN_BYTES, in_offset: int = 0):
    tensor = module.InferInput("lr", list(IMAGE.shape), "FP32")
    tensor.set_shared_memory(name, in_size, in_offset)
    wanted = module.InferRequestedOutput("hr")
    wanted.set_shared_memory(name, out_size, out_offset)
    return client.infer("sr2", [tensor], outputs=[wanted])


def _output(handle) -> np.ndarray:
    return shm.get_contents_as_numpy(handle, np.float32, [1, 3, 16, 16], IN_BYTES)


def test_grpc_shared_memory_equals_plain_and_status_lists_regions(grpc_client, region) -> None:
    handle, name, key = region
    grpc_client.register_system_shared_memory(name, key, IN_BYTES + OUT_BYTES)
    result = _shared(grpc_client, tc, name)
    assert np.array_equal(_output(handle), _plain(grpc_client, tc))
    out = result.get_output("hr")
    assert list(out.shape) == [1, 3, 16, 16] and not result.get_response().raw_output_contents
    assert out.parameters["shared_memory_region"].string_param == name
    assert out.parameters["shared_memory_byte_size"].int64_param == OUT_BYTES
    assert out.parameters["shared_memory_offset"].int64_param == IN_BYTES
    regions = grpc_client.get_system_shared_memory_status(as_json=True)["regions"]
    assert regions[name] == {"name": name, "key": key, "byte_size": str(IN_BYTES + OUT_BYTES)}  # JSON: 64-bit as text
    assert "system_shared_memory" in grpc_client.get_server_metadata().extensions
    grpc_client.unregister_system_shared_memory(name)
    assert name not in grpc_client.get_system_shared_memory_status().regions
    grpc_client.unregister_system_shared_memory(name)  # twice: no error, as in Triton


def test_grpc_one_input_shared_one_sent_and_streaming(server, grpc_client, region) -> None:
    """aging takes an image and an age: the image from the region, the age in raw contents (one raw entry)."""
    handle, name, key = region
    grpc_client.register_system_shared_memory(name, key, IN_BYTES + OUT_BYTES)
    image = tc.InferInput("image", list(IMAGE.shape), "FP32").set_shared_memory(name, IN_BYTES)
    age = tc.InferInput("age", [1, 3], "FP32")
    age.set_data_from_numpy(np.eye(3, dtype=np.float32)[[2]])
    assert np.allclose(grpc_client.infer("aging", [image, age]).as_numpy("aged"), IMAGE + 0.5)
    wanted = tc.InferRequestedOutput("hr")
    wanted.set_shared_memory(name, OUT_BYTES, IN_BYTES)
    lr = tc.InferInput("lr", list(IMAGE.shape), "FP32").set_shared_memory(name, IN_BYTES)
    answers = []
    grpc_client.start_stream(callback=lambda result, error: answers.append((result, error)))
    grpc_client.async_stream_infer("sr2", [lr], outputs=[wanted])
    grpc_client.stop_stream()
    assert answers[0][1] is None and np.array_equal(_output(handle), IMAGE.repeat(2, 2).repeat(2, 3))


def test_http_shared_memory_equals_plain_status_and_unregister(http_client, region) -> None:
    handle, name, key = region
    http_client.register_system_shared_memory(name, key, IN_BYTES + OUT_BYTES)
    result = _shared(http_client, th, name)
    assert np.array_equal(_output(handle), _plain(http_client, th))
    out = result.get_output("hr")
    assert out["parameters"] == {"shared_memory_region": name, "shared_memory_byte_size": OUT_BYTES,
                                 "shared_memory_offset": IN_BYTES}
    assert "data" not in out and "binary_data_size" not in out["parameters"]  # no bytes in the answer
    assert http_client.get_system_shared_memory_status() == [
        {"name": name, "key": key, "offset": 0, "byte_size": IN_BYTES + OUT_BYTES}]
    assert http_client.get_system_shared_memory_status(name)[0]["name"] == name
    http_client.unregister_system_shared_memory(name)
    assert http_client.get_system_shared_memory_status() == []


def test_a_region_at_an_offset_of_its_object(grpc_client, region) -> None:
    """A region registered at offset IN_BYTES of the object: tensor offsets count from the region's start."""
    handle, name, key = region
    grpc_client.register_system_shared_memory(name, key, OUT_BYTES, offset=IN_BYTES)
    inner = name + "-in"
    grpc_client.register_system_shared_memory(inner, key, IN_BYTES)
    tensor = tc.InferInput("lr", list(IMAGE.shape), "FP32").set_shared_memory(inner, IN_BYTES)
    wanted = tc.InferRequestedOutput("hr")
    wanted.set_shared_memory(name, OUT_BYTES)
    grpc_client.infer("sr2", [tensor], outputs=[wanted])
    assert np.array_equal(_output(handle), IMAGE.repeat(2, 2).repeat(2, 3))


def _grpc_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def test_grpc_errors_are_clear_and_the_server_still_serves(grpc_client, region) -> None:
    handle, name, key = region
    grpc_client.register_system_shared_memory(name, key, IN_BYTES + OUT_BYTES)
    err = _grpc_error(lambda: grpc_client.register_system_shared_memory(name, key, IN_BYTES))
    assert err.status() == "StatusCode.ALREADY_EXISTS" and "already registered" in err.message()
    err = _grpc_error(lambda: _shared(grpc_client, tc, "nope"))
    assert err.status() == "StatusCode.NOT_FOUND" and "'nope' is not registered" in err.message()
    err = _grpc_error(lambda: _shared(grpc_client, tc, name, out_offset=IN_BYTES + 8))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "past the end of region" in err.message()
    err = _grpc_error(lambda: _shared(grpc_client, tc, name, in_size=IN_BYTES - 4))
    assert "needs " + str(IN_BYTES) + " bytes" in err.message()
    err = _grpc_error(lambda: _shared(grpc_client, tc, name, out_size=OUT_BYTES - 4))
    assert f"needs at least {OUT_BYTES} bytes" in err.message()
    err = _grpc_error(lambda: grpc_client.register_system_shared_memory("x", "/ganserve_test_missing", 64))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "no shared-memory object" in err.message()
    err = _grpc_error(lambda: grpc_client.register_system_shared_memory("y", "/../etc/passwd", 64))
    assert "not a POSIX shared-memory name" in err.message()
    err = _grpc_error(lambda: grpc_client.register_system_shared_memory("z", key, 2 * (IN_BYTES + OUT_BYTES)))
    assert "past the end of" in err.message()
    err = _grpc_error(lambda: grpc_client.get_system_shared_memory_status("nope"))
    assert err.status() == "StatusCode.NOT_FOUND"
    err = _grpc_error(lambda: grpc_client.get_cuda_shared_memory_status())
    assert err.status() == "StatusCode.UNIMPLEMENTED" and "CUDA shared memory is not served" in err.message()
    # the client shrinks its object after registering: refused before any page past the end is touched
    fd = os.open(Path(SHM_DIR) / key.lstrip("/"), os.O_RDWR)
    try:
        os.ftruncate(fd, IN_BYTES + 64)
    finally:
        os.close(fd)
    err = _grpc_error(lambda: _shared(grpc_client, tc, name))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "truncated after registration" in err.message()
    assert np.array_equal(_plain(grpc_client, tc), IMAGE.repeat(2, 2).repeat(2, 3))


def test_http_errors_are_clear(http_client, region) -> None:
    handle, name, key = region
    http_client.register_system_shared_memory(name, key, IN_BYTES + OUT_BYTES)
    with pytest.raises(InferenceServerException) as info:
        http_client.register_system_shared_memory(name, key, IN_BYTES)
    assert info.value.status() == "409" and "already registered" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        _shared(http_client, th, "nope")
    assert info.value.status() == "404" and "'nope' is not registered" in info.value.message()
    fd = os.open(Path(SHM_DIR) / key.lstrip("/"), os.O_RDWR)
    try:
        os.ftruncate(fd, 16)
    finally:
        os.close(fd)
    with pytest.raises(InferenceServerException) as info:
        _shared(http_client, th, name)
    assert info.value.status() == "400" and "truncated after registration" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        http_client.get_cuda_shared_memory_status()
    assert info.value.status() == "501"
    assert np.array_equal(_plain(http_client, th), IMAGE.repeat(2, 2).repeat(2, 3))


def test_unregister_while_a_view_is_held_and_close(region) -> None:
    """A region unregistered (or the server closed) while a request still holds a view of it does not fail: the
    mapping lives until the view is dropped."""
    handle, name, key = region
    regions = SharedMemory()
    regions.register(name, key, 0, IN_BYTES + OUT_BYTES)
    view = regions._window(Slot(name, 0, IN_BYTES), "input", IN_BYTES, exact=True)
    regions.unregister(name)
    assert np.array_equal(view.view(np.float32).reshape(IMAGE.shape), IMAGE)
    regions.register(name, key, 0, IN_BYTES)
    regions.close()
    assert regions.regions == {}
    with pytest.raises(status.ServingError) as info:
        regions.read(Slot(name, 0, IN_BYTES), np.dtype(np.float32), list(IMAGE.shape), "input 'lr'")
    assert "not registered" in info.value.message


def test_off_unless_the_listener_is_loopback(region) -> None:
    assert enabled_for("auto", "127.0.0.1")[0] and enabled_for("auto", "::1")[0]
    on, why = enabled_for("auto", "0.0.0.0")
    assert not on and "--shared-memory on" in why
    assert enabled_for("on", "0.0.0.0")[0] and not enabled_for("off", "127.0.0.1")[0]
    _, name, key = region
    with pytest.raises(status.ServingError) as info:
        SharedMemory(*enabled_for("off", "127.0.0.1")).register(name, key, 0, IN_BYTES)
    assert "system shared memory is off" in info.value.message


def test_tokens_still_apply(repo: Path, tmp_path: Path, region) -> None:
    _, name, key = region
    tokens = tmp_path / "tokens"
    tokens.write_text("shared-memory-test-token\n")
    with ServerThread(server_config(repo, auth_token_file=tokens)) as thread:
        client = tc.InferenceServerClient(f"127.0.0.1:{thread.port}")
        err = _grpc_error(lambda: client.register_system_shared_memory(name, key, IN_BYTES))
        assert err.status() == "StatusCode.UNAUTHENTICATED"
        client.register_system_shared_memory(name, key, IN_BYTES, headers={"authorization": "Bearer shared-memory-test-token"})
        web = th.InferenceServerClient(f"127.0.0.1:{thread.http_port}")
        with pytest.raises(InferenceServerException) as info:
            web.get_system_shared_memory_status()
        assert info.value.status() == "401"
        assert web.get_system_shared_memory_status(headers={"Authorization": "Bearer shared-memory-test-token"})[0]["key"] == key
        client.close()
        web.close()
