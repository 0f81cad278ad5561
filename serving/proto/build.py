"""Regenerate serving/proto/ from protos/*.proto with grpc_tools.protoc (a dev-only dependency).

``python -m ganserve.serving.proto.build`` writes the files; ``--check`` exits 1 when the committed files are stale.
Generated imports are rewritten to ``ganserve.serving.proto.*`` and the messages are registered in ``ganserve.serving.proto.POOL``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path("protos")  # the checkout's, from its root (--protos elsewhere); the .proto files are not installed
OUT_DIR = Path(__file__).resolve().parent
PROTOS = ["inference/model_config.proto", "inference/grpc_service.proto", "ganserve/v1/images.proto"]
PACKAGES = ["inference", "ganserve", "ganserve/v1"]
_IMPORT_RE = re.compile(r"^from (inference|ganserve\.v1) import ", re.MULTILINE)
_POOL_IMPORT = "from ganserve.serving.proto import POOL as _GANSERVE_POOL\n"


def _postprocess(text: str) -> str:
    """Point generated imports at ganserve.serving.proto and register descriptors in the private pool."""
    text = _IMPORT_RE.sub(r"from ganserve.serving.proto.\1 import ", text)
    if "_descriptor_pool.Default()" in text:
        text = text.replace("_descriptor_pool.Default()", "_GANSERVE_POOL")
        text = text.replace("from google.protobuf import descriptor_pool as _descriptor_pool\n",
                            "from google.protobuf import descriptor_pool as _descriptor_pool\n" + _POOL_IMPORT, 1)
    return text


def generate(proto_dir: Path = PROTO_DIR) -> dict[str, str]:
    """Run protoc on proto_dir into a temp folder; return {relative path: post-processed text} of every generated file."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={tmp}",
               f"--grpc_python_out={tmp}", *PROTOS]
        subprocess.run(cmd, check=True)
        files = {str(p.relative_to(tmp)): _postprocess(p.read_text()) for p in sorted(Path(tmp).rglob("*.py"))}
    for pkg in PACKAGES:
        files[f"{pkg}/__init__.py"] = '"""Generated protobuf package (see serving/proto/build.py)."""\n'
    return files


def stale_files(files: dict[str, str]) -> list[str]:
    """Generated files whose committed copy differs or is missing."""
    return [rel for rel, text in files.items() if not (OUT_DIR / rel).exists() or (OUT_DIR / rel).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files are not current")
    parser.add_argument("--protos", type=Path, default=PROTO_DIR, help=f"the .proto folder (default: {PROTO_DIR})")
    args = parser.parse_args(argv)
    if not all((args.protos / rel).is_file() for rel in PROTOS):
        parser.error(f"--protos {args.protos}: not the protos folder (run from the checkout's root, or name it)")
    files = generate(args.protos.resolve())
    stale = stale_files(files)
    if args.check:
        for rel in stale:
            print(f"stale: serving/proto/{rel}", file=sys.stderr)
        return 1 if stale else 0
    for rel in stale:
        target = OUT_DIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".py.tmp")
        tmp.write_text(files[rel])
        tmp.replace(target)
        print(f"wrote serving/proto/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
