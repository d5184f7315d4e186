"""drox.gates: accept/reject checks on rollouts (DRO rubric gates); contract in drox.filters.base.

Every module of this package is imported here, so a new gate is one file plus
``conf/gate/<name>.yaml``.
"""

import importlib
import pkgutil

from drox.filters.base import GATES, GateResult, register_gate

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["GATES", "GateResult", "register_gate"]
