"""Load manifests into the kserve SDK's and the kubernetes client's model classes, refusing any field they do not
know; prints one line per object, exits 1 with the path of the first unknown or invalid field.

    python tests/deploy/sdk_check.py SDK_DIR FILE.yaml...

SDK_DIR holds kserve and kubernetes installed with --no-deps (the Makefile puts them in .venv/kserve-sdk): the
kserve SDK pins protobuf<7, which the server's own protobuf cannot be, and its model classes need neither its server
nor protobuf, so the two packages' __init__ (which import those) are skipped and only their model modules load.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import yaml

KINDS = {("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
         ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
         ("apps/v1", "Deployment"): "V1Deployment", ("v1", "Service"): "V1Service",
         ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler"}
SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str,
           "date": str}


def _packages(root: Path):
    sys.path.insert(0, str(root))
    for name in ("kserve", "kubernetes", "kubernetes.client"):
        module = types.ModuleType(name)
        module.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules[name] = module
    import kserve.models as kserve_models
    import kubernetes.client.models as k8s_models
    return kserve_models, k8s_models


def build(value, type_name: str, where: str, modules):
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list")
        return [build(v, type_name[5:-1], f"{where}[{i}]", modules) for i, v in enumerate(value)]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping")
        inner = type_name[5:-1].split(", ", 1)[1]
        return {k: build(v, inner, f"{where}.{k}", modules) for k, v in value.items()}
    if type_name in SCALARS:
        if not isinstance(value, SCALARS[type_name]) or (type_name == "int" and isinstance(value, bool)):
            raise ValueError(f"{where}: {value!r} is not a {type_name}")
        return value
    cls = next((getattr(m, type_name) for m in modules if hasattr(m, type_name)), None)
    if cls is None:
        raise ValueError(f"{where}: no model class {type_name}")
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a {type_name} mapping")
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in by_key:
            raise ValueError(f"{where}.{key}: not a field of {type_name}")
        attr = by_key[key]
        kwargs[attr] = build(item, cls.openapi_types[attr], f"{where}.{key}", modules)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # the class's own checks (required fields, enums)
        raise ValueError(f"{where}: {type_name}: {exc}") from exc


def main(argv: list[str]) -> int:
    modules = _packages(Path(argv[0]))
    for path in argv[1:]:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            type_name = KINDS.get((doc.get("apiVersion"), doc.get("kind")))
            if type_name is None:
                print(f"{path}: no SDK class for {doc.get('apiVersion')} {doc.get('kind')}")
                return 1
            try:
                obj = build(doc, type_name, f"{Path(path).name}:{doc['kind']}", modules)
            except ValueError as exc:
                print(f"{path}: {exc}")
                return 1
            print(f"{path}: {doc['kind']} {doc['metadata']['name']} -> {type(obj).__module__}.{type(obj).__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
