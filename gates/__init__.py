"""drox.gates: accept/reject checks on rollouts (DRO rubric gates); the contract is in drox.gates.base.

Every module of this package is read here (not imported: drox.registry.Registry.declare_package) and the gates
it registers are declared by name, imported on first use; so a new gate is one file (``@register_gate``); a
``conf/gate/<name>.yaml`` is optional (it documents the defaults).
"""

from drox.gates.base import GATES, GateResult, apply_gates, register_gate

GATES.declare_package(__name__, __path__[0], ("register_gate",))

__all__ = ["GATES", "GateResult", "apply_gates", "register_gate"]
