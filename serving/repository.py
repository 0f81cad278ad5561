"""Reads a model repository (ganserve.core.contract layout): model card, config.pbtxt, versions to load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from ganserve.core.contract import (
    CARD_FILE, CONFIG_FILE, MODEL_FILE, REFERENCE_FILE, ModelCard, check_model_name, list_models, model_versions,
    triton_config,
)
from ganserve.core.errors import RepositoryError
from ganserve.serving.proto.inference import model_config_pb2


@dataclass
class ModelSource:
    """One model folder as read from disk: what to load, before any session exists."""

    name: str
    path: Path
    card: ModelCard | None
    config: model_config_pb2.ModelConfig
    versions: list[int]
    files: tuple = ()  # (name, size, mtime_ns) of config.pbtxt and model_card.json as read: poll's change test

    def model_path(self, version: int) -> Path:
        return self.path / str(version) / MODEL_FILE

    def reference_path(self, version: int) -> Path | None:
        path = self.path / str(version) / REFERENCE_FILE
        return path if path.exists() else None


def parse_config(text: str, where: str = "config.pbtxt") -> model_config_pb2.ModelConfig:
    """Parse Triton config.pbtxt text into a ModelConfig message."""
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{where}: not a valid model config ({exc})") from exc


def versions_to_load(config: model_config_pb2.ModelConfig, available: list[int]) -> list[int]:
    """Apply the config's version_policy (default: the latest one) to the versions on disk."""
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return list(available)
    if choice == "specific":
        wanted = set(policy.specific.versions)
        missing = sorted(wanted - set(available))
        if missing:
            raise RepositoryError(f"model {config.name!r}: versions {missing} in version_policy are not on disk")
        return [v for v in available if v in wanted]
    count = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions else 1
    return available[-count:]


def scan_repository(repo: str | Path) -> tuple[list[str], dict[str, str]]:
    """The model folders to serve and, apart, those skipped with the reason (a name check_model_name refuses)."""
    names: list[str] = []
    skipped: dict[str, str] = {}
    for name in list_models(repo):
        try:
            names.append(check_model_name(name))
        except RepositoryError as exc:
            skipped[name] = f"{exc}; the folder is skipped"
    return names, skipped


def model_files(path: Path) -> tuple:
    """What poll mode compares to see a model's config.pbtxt or model_card.json change: name, size and mtime."""
    found = []
    for name in (CONFIG_FILE, CARD_FILE):
        try:
            stat = (path / name).stat()
        except OSError:
            continue
        found.append((name, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def read_model(repo: str | Path, name: str) -> ModelSource:
    """Read one model folder; raises RepositoryError when it cannot be served."""
    path = Path(repo) / name
    if not path.is_dir():
        raise RepositoryError(f"model {name!r} is not in the repository {repo}")
    files = model_files(path)  # before reading: an edit during the read shows as a change at the next poll
    card = ModelCard.load(path / CARD_FILE) if (path / CARD_FILE).exists() else None
    config_path = path / CONFIG_FILE
    if config_path.exists():
        config = parse_config(config_path.read_text(), str(config_path))
    elif card is not None:
        config = parse_config(triton_config(card), f"{name}: config derived from the model card")
    else:
        raise RepositoryError(f"model {name!r}: neither {CONFIG_FILE} nor {CARD_FILE}")
    if config.name and config.name != name:
        raise RepositoryError(f"model folder {name!r} holds a config named {config.name!r}")
    config.name = name
    available = model_versions(path)
    if not available:
        raise RepositoryError(f"model {name!r}: no version folder with a {MODEL_FILE}")
    return ModelSource(name=name, path=path, card=card, config=config, versions=versions_to_load(config, available),
                       files=files)
