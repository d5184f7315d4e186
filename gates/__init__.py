"""drox.gates: accept/reject checks on rollouts (DRO rubric gates); the contract is in drox.gates.base.

Every module of this package is imported here, so a new gate is one file (``@register_gate``); a
``conf/gate/<name>.yaml`` is optional (it documents the defaults).
"""

import importlib
import pkgutil

from drox.gates.base import GATES, GateResult, apply_gates, register_gate

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod != "base" and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["GATES", "GateResult", "apply_gates", "register_gate"]
