"""The committed generated code is current, and our protos are wire-compatible with tritonclient's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as triton_config_pb2
from tritonclient.grpc import service_pb2 as triton_service_pb2

from ganserve.core.contract import triton_config
from ganserve.serving.proto.inference import grpc_service_pb2, model_config_pb2
from ganserve.serving.repository import parse_config
from serving_models import CARDS

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current() -> None:
    result = subprocess.run([sys.executable, "-m", "ganserve.serving.proto.build", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _fields(descriptor) -> dict[str, tuple]:
    """name -> (number, type, label, message/enum type name) of a message's fields."""
    return {f.name: (f.number, f.type, f.is_repeated,
                     f.message_type.full_name if f.message_type else f.enum_type.full_name if f.enum_type else "")
            for f in descriptor.fields}


def _compare_messages(ours, theirs) -> int:
    """Assert every field of ours (recursively, nested types too) matches theirs; return messages checked."""
    checked = 1
    theirs_fields = _fields(theirs)
    for name, spec in _fields(ours).items():
        assert name in theirs_fields, f"{ours.full_name}.{name} not in the published schema"
        assert spec == theirs_fields[name], f"{ours.full_name}.{name}: {spec} != {theirs_fields[name]}"
    for nested in ours.nested_types:
        checked += _compare_messages(nested, theirs.nested_types_by_name[nested.name])
    for enum in ours.enum_types:
        theirs_values = {v.name: v.number for v in theirs.enum_types_by_name[enum.name].values}
        assert {v.name: v.number for v in enum.values} == {k: theirs_values[k] for k in (v.name for v in enum.values)}
    return checked


def test_service_messages_match_tritonclient() -> None:
    ours, theirs = grpc_service_pb2.DESCRIPTOR, triton_service_pb2.DESCRIPTOR
    assert ours.package == theirs.package == "inference"
    checked = sum(_compare_messages(m, theirs.message_types_by_name[name]) for name, m in ours.message_types_by_name.items())
    assert checked >= 30
    service, their_service = ours.services_by_name["GRPCInferenceService"], theirs.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        other = their_service.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (other.input_type.full_name,
                                                                               other.output_type.full_name)
        assert (method.client_streaming, method.server_streaming) == (other.client_streaming, other.server_streaming)


def test_model_config_matches_tritonclient() -> None:
    ours, theirs = model_config_pb2.DESCRIPTOR, triton_config_pb2.DESCRIPTOR
    for name, message in ours.message_types_by_name.items():
        _compare_messages(message, theirs.message_types_by_name[name])
    assert {v.name: v.number for v in ours.enum_types_by_name["DataType"].values} == \
        {v.name: v.number for v in theirs.enum_types_by_name["DataType"].values}


def test_contract_config_parses_and_round_trips() -> None:
    text = triton_config(CARDS["aging"])
    ours = parse_config(text)
    theirs = text_format.Parse(text, triton_config_pb2.ModelConfig())
    assert [i.name for i in ours.input] == ["image", "age"] and list(ours.input[0].dims) == [3, -1, -1]
    assert ours.max_batch_size == 8 and list(ours.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert triton_config_pb2.ModelConfig.FromString(ours.SerializeToString()) == theirs
