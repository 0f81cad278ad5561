"""Applications and networks from outside the repository: modules named in ``GANSERVE_PLUGINS`` (comma-separated)
and those a distribution registers under the entry-point group ``ganserve.applications`` are imported, so what
they register (``@register_model``, ``@register_network``) is found by ``ganserve train``, export and ship."""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import EntryPoint, entry_points

from ganserve.core.errors import GanserveError

PLUGINS_ENV = "GANSERVE_PLUGINS"
ENTRY_POINT_GROUP = "ganserve.applications"

_scanned: dict[tuple[str, ...], list[EntryPoint]] = {}


def plugin_modules() -> list[str]:
    """The module names ``GANSERVE_PLUGINS`` lists, in order."""
    return [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]


def _entry_points() -> list[EntryPoint]:
    """The group's entry points, scanned once per import path (a folder added to sys.path is scanned anew)."""
    key = tuple(sys.path)
    if key not in _scanned:
        _scanned[key] = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    return _scanned[key]


def _failure(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def load_plugins() -> None:
    """Import every plugin module (already imported ones cost nothing); a one-line error names one that fails."""
    for name in plugin_modules():
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # any error inside a plugin is the plugin's: name it and say why
            raise GanserveError(
                f"plugin module {name!r} (from {PLUGINS_ENV}) failed to import ({_failure(exc)})") from exc
    for ep in _entry_points():
        if ep.module in sys.modules and not ep.attr:
            continue
        try:
            ep.load()
        except Exception as exc:
            raise GanserveError(f"plugin {ep.name!r} = {ep.value!r} (entry point group {ENTRY_POINT_GROUP}) failed to "
                                f"import ({_failure(exc)})") from exc
