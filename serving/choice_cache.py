"""Warm-start cache of the per-model provider/precision choice, so a restart or a new replica skips the timing.

Layout under the cache folder (``ganserve serve --cache-dir``):

    choices/<key>.json   one model version's measured choice: the chosen candidate and the whole candidate table
    openvino/            OpenVINO's compiled-model blobs (the OpenVINO provider's ``cache_dir`` option)

``<key>`` is the SHA-256 of a canonical JSON document (``key_material``) naming everything that can change the
outcome: the SHA-256 of every candidate model file and of reference.npz, the card, the candidate list, the machine
(CPU model and ISA flags), the onnxruntime version and providers, and the runtime settings (providers, pinned
precision, threads, streams, timing size, bf16 hardware). Anything different is another key, hence a miss; an
entry that cannot be read is a miss too (logged) and the new measurement overwrites it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from ganserve.core.files import file_sha256
from ganserve.core.machine import cpu_info
from ganserve.serving.candidates import PSNR_DROP_DB, REFERENCE_TOLERANCE, Candidate, Choice, Trial

log = logging.getLogger("ganserve.serving")

CACHE_ENV = "GANSERVE_CACHE_DIR"
FORMAT = 1  # bump when the entry layout or the meaning of a key field changes
CHOICES_DIR, OPENVINO_DIR = "choices", "openvino"


def default_cache_dir() -> Path:
    """$GANSERVE_CACHE_DIR if set, else ~/.cache/ganserve (the serve command's default)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ganserve"


def machine_fingerprint() -> dict[str, object]:
    """The machine and runtime facts a measured choice depends on: CPU, ISA flags, onnxruntime and its providers."""
    info = cpu_info()
    return {"cpu_model": info["cpu_model"], "isa": list(info["isa"]), "logical_cpus": info["logical_cpus"],
            "arch": info["machine"], "onnxruntime": ort.__version__,
            "available_providers": list(ort.get_available_providers())}


def key_of(material: dict[str, object]) -> str:
    """The cache key: SHA-256 of the key material as canonical JSON."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ChoiceCache:
    """One cache folder: read and atomically write measured choices; hand out OpenVINO's blob folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    @property
    def openvino_dir(self) -> Path:
        """Folder for OpenVINO's compiled models (created on first use)."""
        path = self.root / OPENVINO_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    def entry_path(self, key: str) -> Path:
        """Where the entry of one key lives."""
        return self.root / CHOICES_DIR / f"{key}.json"

    def load(self, key: str) -> dict[str, object] | None:
        """The stored entry of `key`, or None on a miss (absent, unreadable, corrupt or another key inside)."""
        path = self.entry_path(key)
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning("choice cache: %s is unreadable (%s); measuring again", path, exc)
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key \
                or not isinstance(entry.get("chosen"), dict) or not isinstance(entry.get("table"), list):
            log.warning("choice cache: %s is not a valid entry for its key; measuring again", path)
            return None
        return entry

    def store(self, key: str, entry: dict[str, object]) -> Path | None:
        """Write `entry` under `key` atomically (temp file + os.replace); a failing write is logged, not raised."""
        path = self.entry_path(key)
        record = {"format": FORMAT, "key": key, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry}
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("choice cache: cannot write %s (%s); the next start measures again", path, exc)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            return None
        return path


def key_material(candidates: list[Candidate], reference: Path | None, card_json: str,
                 settings: dict[str, object]) -> dict[str, object]:
    """Everything a measured choice depends on, as JSON-able values (hashes for the files; OSError if unreadable)."""
    files = sorted({c.path for c in candidates})
    return {
        "format": FORMAT,
        "files": {p.name: file_sha256(p) for p in files},
        "reference": file_sha256(reference) if reference is not None else None,
        "card": hashlib.sha256(card_json.encode()).hexdigest(),
        "candidates": [[c.provider, c.precision, c.path.name, c.options] for c in candidates],
        "rules": {"psnr_drop_db": PSNR_DROP_DB, "tolerance": REFERENCE_TOLERANCE},
        "machine": machine_fingerprint(),
        "settings": settings,
    }


def entry_of(choice: Choice, material: dict[str, object]) -> dict[str, object]:
    """What the cache stores for a measured choice: the chosen candidate, the table (file names only) and the key."""
    rows = [{**t.as_dict(), "file": Path(t.file).name if t.file else ""} for t in choice.table]
    chosen = choice.candidate
    return {"chosen": {"provider": chosen.provider, "precision": chosen.precision, "file": chosen.path.name,
                       "passed": choice.passed},
            "table": rows, "key_material": material}


def restore(entry: dict[str, object], candidates: list[Candidate],
            version_dir: Path) -> tuple[Candidate, list[Trial], bool] | None:
    """The stored choice as (today's candidate object, the table with this folder's paths, passed); None = unusable."""
    try:
        chosen = entry["chosen"]
        wanted = (chosen["provider"], chosen["precision"], chosen["file"])
        table = [Trial.from_dict(row) for row in entry["table"]]
        passed = bool(chosen.get("passed", True))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("choice cache: entry has a malformed choice or table (%s); measuring again", exc)
        return None
    candidate = next((c for c in candidates if (c.provider, c.precision, c.path.name) == wanted), None)
    rows = [(t.provider, t.precision) for t in table if t.status == "chosen"]
    if candidate is None or rows != [wanted[:2]]:
        log.warning("choice cache: the stored choice %s is not among today's candidates; measuring again", wanted)
        return None
    for row in table:
        if row.file:
            row.file = str(version_dir / row.file)
    return candidate, table, passed
