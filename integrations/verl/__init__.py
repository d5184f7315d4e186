"""drox.integrations.verl: drox's components inside verl (docs/verl.md; design: its "How drox plugs into verl").

Pinned to one verl release, :data:`SUPPORTED_VERL`: the hooks used (the advantage-estimator registry, the reward
loop's manager, the V1 trainer's TaskRunner) are experimental or private in verl and change between releases.

Importing this package imports nothing from verl (nor torch): the modules that need verl import it themselves and
are loaded only where verl is installed (``register``, ``reward_manager``, ``main``, ``resolve``). The verl-free
modules (``estimators``, ``rules``, ``export``, ``launch``) are what the main test suite exercises.
"""

from __future__ import annotations

from typing import Any, Optional

SUPPORTED_VERL = "0.9.1"
"""The one verl release this package is written and tested against (``pip install 'drox[verl]'``)."""

INSTALL_HINT = ("pip install 'drox[verl]' (verl[verl-core]==0.9.1 in its own environment; `make test-verl` builds "
                "one in .venv-verl)")

__all__ = ["INSTALL_HINT", "SUPPORTED_VERL", "check_versions", "config_get", "installed_verl_version"]


def installed_verl_version() -> Optional[str]:
    """The version of the installed ``verl`` distribution, read from its metadata (verl is not imported), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("verl")
    except PackageNotFoundError:
        return None


def check_versions() -> str:
    """Refuse anything but verl :data:`SUPPORTED_VERL`; return the installed version.

    Raises :class:`drox.errors.ConfigError` (one line, CLI exit code 2) when verl is missing or another release.
    """
    from drox.errors import ConfigError

    found = installed_verl_version()
    if found is None:
        raise ConfigError(f"verl is not installed in this environment; the verl backend needs verl=={SUPPORTED_VERL}: "
                          f"{INSTALL_HINT}")
    if found != SUPPORTED_VERL:
        raise ConfigError(f"verl {found} is installed, but drox.integrations.verl supports verl=={SUPPORTED_VERL} "
                          f"only (its trainer hooks change between releases): pip install 'verl[verl-core]=="
                          f"{SUPPORTED_VERL}'")
    return found


def config_get(node: Any, key: str, default: Any = None) -> Any:
    """``node[key]`` of a config node (DictConfig, dict or object; None allowed), ``default`` when missing or None."""
    if node is None:
        return default
    value = node.get(key, None) if hasattr(node, "get") else getattr(node, key, None)
    return default if value is None else value
