"""drox.filters: group (query-level) and token-level filters; gates live in drox.gates.

Every module of this package is imported here, so a new filter is one file (``@register_filter``); a
``conf/filter/<name>.yaml`` is optional (it documents the defaults).
"""

import importlib
import pkgutil

from drox.filters.base import FILTERS, GroupDecision, RoundEnv, register_filter

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod != "base" and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["FILTERS", "GroupDecision", "RoundEnv", "register_filter"]
