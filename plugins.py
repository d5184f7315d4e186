"""Components from the user's own files: ``drox train plugins=[my_rewards.py,my_pkg.gates] +reward=short``.

Each entry of ``plugins`` is a Python file (``path/to/file.py``, relative to the working directory) or an
importable module (``my_pkg.rewards``). drox imports them before it composes and validates the config, so
that whatever they register (``@register_reward``, ``@register_filter``, ``@register_gate``,
``@register_advantage_estimator``, ...) is selectable by name and its options are checked like a
built-in's. A file is imported once per process under the module name ``drox_plugin_<stem>``; its folder is
not added to ``sys.path``.

Installed packages plug in without ``plugins=``: every entry point of the group ``drox.plugins`` (in the
package's ``pyproject.toml``: ``[project.entry-points."drox.plugins"] my_pkg = "my_pkg.drox_components"``) names a
module that :func:`import_plugins` imports first, once per process, so that its components are selectable like a
built-in's.

The same loader resolves ``file.py:function`` / ``module:function`` paths (the ``function`` reward source,
rubric checks). Every failure is one :class:`~drox.errors.ConfigError` line naming the entry.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, List, Optional

from drox.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "import_plugins", "installed_plugins", "load_callable", "load_module",
           "plugins_from_overrides"]

ENTRY_POINT_GROUP = "drox.plugins"
_imported_installed = False


def load_module(entry: str, key: str = "plugins") -> ModuleType:
    """Import ``entry`` (a ``.py`` file or a dotted module name); ConfigError naming ``key`` on failure."""
    entry = str(entry).strip()
    if not entry:
        raise ConfigError(f"{key}: empty entry; give a file.py or a module name")
    if entry.endswith(".py") or "/" in entry or "\\" in entry:
        path = Path(entry).expanduser()
        if not path.is_file():
            raise ConfigError(f"{key}: {entry} is not a file (paths are relative to {Path.cwd()})")
        path = path.resolve()
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
        name = f"drox_plugin_{path.stem}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{key}: cannot import {entry} (not a Python file?)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except ConfigError as e:  # e.g. a component registered twice
            sys.modules.pop(name, None)
            raise ConfigError(f"{key}: {entry}: {e}") from None
        except Exception as e:
            sys.modules.pop(name, None)
            raise ConfigError(f"{key}: importing {entry} failed: {type(e).__name__}: {e}") from None
        return module
    try:
        return importlib.import_module(entry)
    except ConfigError as e:
        raise ConfigError(f"{key}: {entry}: {e}") from None
    except ModuleNotFoundError as e:
        raise ConfigError(f"{key}: no module named {e.name!r} (importing {entry}); give a file.py path or install "
                          "the package") from None
    except Exception as e:
        raise ConfigError(f"{key}: importing {entry} failed: {type(e).__name__}: {e}") from None


def installed_plugins() -> List[str]:
    """The modules the installed packages' ``drox.plugins`` entry points name (``module`` or ``module:attr``)."""
    from importlib.metadata import entry_points

    return [ep.value.partition(":")[0].strip() for ep in entry_points(group=ENTRY_POINT_GROUP)]


def import_plugins(entries: Optional[Iterable[str]]) -> List[ModuleType]:
    """Import the installed packages' entry points (the first time), then every plugin entry, in order
    (registration happens on import)."""
    global _imported_installed
    if not _imported_installed:
        _imported_installed = True
        for module in installed_plugins():
            load_module(module, key=f"entry point {ENTRY_POINT_GROUP}")
    return [load_module(e) for e in (entries or [])]


def load_callable(spec: str, key: str) -> Callable[..., Any]:
    """``file.py:name`` or ``module:name`` (``name`` may be dotted, ``Class.method``) -> the callable."""
    target, sep, attr = str(spec).rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"{key}={spec}: give 'file.py:function' or 'module:function'")
    obj: Any = load_module(target, key)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}={spec}: {target} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{key}={spec}: {attr} is not callable")
    return obj


def plugins_from_overrides(overrides: Iterable[str]) -> List[str]:
    """The ``plugins=[...]`` entries among Hydra command-line overrides (before Hydra composes anything).

    Accepts ``plugins=[a.py,b.mod]``, ``plugins=a.py`` and the ``+plugins=`` / ``++plugins=`` forms; the
    value is parsed with Hydra's own override grammar so quoting behaves as on the command line.
    """
    found: List[str] = []
    for ov in overrides:
        key, eq, _ = ov.partition("=")
        if not eq or key.lstrip("+~") != "plugins":
            continue
        if key.startswith("~"):
            return []
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            value = OverridesParser.create().parse_override(ov).value()
        except Exception as e:
            raise ConfigError(f"plugins: cannot parse {ov!r}: {str(e).splitlines()[0]}") from None
        found = [str(v) for v in (value if isinstance(value, list) else [value]) if v is not None]
    return found
