"""drox.filters: group (query-level) and token-level filters; gates live in drox.gates.

Every module of this package is read here (not imported: drox.registry.Registry.declare_package) and the filters
it registers are declared by name, imported on first use; so a new filter is one file (``@register_filter``); a
``conf/filter/<name>.yaml`` is optional (it documents the defaults).
"""

from drox.filters.base import FILTERS, GroupDecision, RoundEnv, register_filter

FILTERS.declare_package(__name__, __path__[0], ("register_filter", "register_group_filter", "register_token_filter"))

__all__ = ["FILTERS", "GroupDecision", "RoundEnv", "register_filter"]
