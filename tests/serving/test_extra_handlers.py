"""A gRPC service of one's own, added in one file: a test-only `test.v1.Echo/Ping` given to
ServerConfig.extra_handlers is served beside ours, behind the same token check (docs/architecture.md, "Where does it
go")."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from ganserve.serving.server import ServerThread
from local_server import server_config
from serving_models import write_model

TOKEN = "echo-test-token-0123456789"


async def ping(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"pong:" + request


ECHO = grpc.method_handlers_generic_handler("test.v1.Echo", {"Ping": grpc.unary_unary_rpc_method_handler(ping)})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("echo")
    write_model(root / "repo", "sr2")
    (root / "tokens").write_text(TOKEN + "\n")
    thread = ServerThread(server_config(root / "repo", auth_token_file=root / "tokens", extra_handlers=(ECHO,)))
    thread.start()
    yield thread
    thread.stop()


def _ping(port: int, metadata: tuple = ()) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return channel.unary_unary("/test.v1.Echo/Ping")(b"hello", metadata=metadata, timeout=10)


def test_the_added_rpc_answers_with_the_token_and_is_refused_without(served) -> None:
    assert _ping(served.port, (("authorization", f"Bearer {TOKEN}"),)) == b"pong:hello"
    with pytest.raises(grpc.RpcError) as info:
        _ping(served.port)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_without_extra_handlers_the_method_does_not_exist(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "sr2")
    thread = ServerThread(server_config(tmp_path / "repo"))
    thread.start()
    try:
        with pytest.raises(grpc.RpcError) as info:
            _ping(thread.port)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        thread.stop()
