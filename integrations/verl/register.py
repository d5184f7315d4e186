"""The verl plugin target: importing this module registers drox's advantage estimators into verl's registry.

verl 0.9.1 imports it in every process that imports verl, in two ways (docs/verl.md "Plugin loading"): the
``verl.plugins`` entry point that drox's pyproject declares (``drox = "drox.integrations.verl.register"``), and the
environment variable ``VERL_USE_EXTERNAL_MODULES=drox.integrations.verl.register`` that drox's launcher sets for the
driver and, through Ray's ``runtime_env``, for every worker. verl swallows an exception raised by an entry-point
plugin (it logs it at DEBUG), so the launcher and the drox TaskRunner call :func:`assert_registered` themselves.

Registering is idempotent: a second import, or a second :func:`register` call, changes nothing.
"""

from __future__ import annotations

import logging
from typing import List

from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est

from drox.integrations.verl.estimators import ESTIMATORS

__all__ = ["REGISTERED", "assert_registered", "register"]

REGISTERED = tuple(ESTIMATORS)
"""The names drox adds to verl's ``ADV_ESTIMATOR_REGISTRY``."""

log = logging.getLogger(__name__)


def register() -> List[str]:
    """Put every function of :data:`drox.integrations.verl.estimators.ESTIMATORS` into verl's registry (once).

    An entry left by an earlier copy of drox's own module (``importlib.reload``) is replaced; a name that another
    package registered first makes verl raise its own ValueError, which is the right outcome (two meanings for one
    name)."""
    for name, fn in ESTIMATORS.items():
        current = ADV_ESTIMATOR_REGISTRY.get(name)
        if current is fn:
            continue
        if current is not None and getattr(current, "__module__", None) == fn.__module__:
            del ADV_ESTIMATOR_REGISTRY[name]
        register_adv_est(name)(fn)
    log.info("drox registered verl advantage estimators: %s", ", ".join(REGISTERED))
    return list(REGISTERED)


def assert_registered() -> None:
    """Raise :class:`drox.errors.ConfigError` (one line) unless every drox estimator is in verl's registry as
    drox's own function (e.g. a plugin import that verl silenced failed half-way)."""
    from drox.errors import ConfigError

    wrong = [name for name, fn in ESTIMATORS.items() if ADV_ESTIMATOR_REGISTRY.get(name) is not fn]
    if wrong:
        raise ConfigError(f"verl's advantage-estimator registry lacks drox's {', '.join(wrong)}; import "
                          "drox.integrations.verl.register in this process (VERL_USE_EXTERNAL_MODULES="
                          "drox.integrations.verl.register) and check that VERL_USE_EXTERNAL_PLUGINS is not 'none'")


register()
