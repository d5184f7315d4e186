"""drox.filters: group (query-level) and token-level filters; gates live in drox.gates.

Every module of this package is imported here, so a new filter is one file plus
``conf/filter/<name>.yaml``.
"""

import importlib
import pkgutil

from drox.filters.base import FILTERS, GATES, GateResult, GroupDecision, parse_options

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod != "base" and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["FILTERS", "GATES", "GateResult", "GroupDecision", "parse_options"]
