"""Compose and check the verl config that a launch plan would run (needs verl 0.9.1; used by ``drox verl --dry-run``
and the tests).

The composition is exactly the entry point's (``main.py``): ``config/drox_ppo_trainer.yaml``, which puts verl's own
``ppo_trainer`` on Hydra's search path (``pkg://verl.trainer.config``), plus the plan's overrides; then verl's
``validate_config``, the check verl's own ``main_ppo`` runs before it starts Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from drox.errors import ConfigError, first_line

CONFIG_DIR = Path(__file__).resolve().parent / "config"
CONFIG_NAME = "drox_ppo_trainer"

__all__ = ["CONFIG_DIR", "CONFIG_NAME", "check_drox_wiring", "compose_verl_config", "validate_verl_config"]


def compose_verl_config(overrides: Sequence[str]):
    """The verl config (an OmegaConf DictConfig, struct mode) of ``drox_ppo_trainer.yaml`` + ``overrides``.

    A bad override (an unknown key, a value of the wrong type) raises :class:`ConfigError` with Hydra's first line.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()  # a caller (the drox CLI) may have left its own Hydra context behind
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            return compose(CONFIG_NAME, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"verl's config rejected an override: {first_line(e)}") from None


def check_drox_wiring(config) -> None:
    """What only drox can see in a verl config: dense PRM step rewards (``drox.reward.prm.dense``) reach the
    advantages only through drox's trainer subclass, so they need ``trainer.v1.trainer_mode=drox_sync`` (otherwise
    verl's trainer would train without them, silently)."""
    from drox.integrations.verl.advantage import TrainerSide

    mode = config.trainer.get("v1", {}).get("trainer_mode", None)
    if TrainerSide.from_config(config.get("drox")).dense and mode != "drox_sync":
        raise ConfigError(f"drox.reward.prm.dense=true needs trainer.v1.trainer_mode=drox_sync (it is {mode}): only "
                          "drox's trainer turns the PRM's step rewards into advantages")


def validate_verl_config(config) -> None:
    """drox's own wiring check (:func:`check_drox_wiring`), then verl's own ``validate_config`` (batch sizes against
    GPUs, micro-batch settings, ...); each complaint becomes one :class:`ConfigError` line."""
    import contextlib
    import importlib.util
    import io
    import warnings

    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    check_drox_wiring(config)
    model = config.actor_rollout_ref.model
    lora_rank = (model.get("lora") or {}).get("rank", 0) or model.get("lora_rank", 0)
    if lora_rank > 0 and config.actor_rollout_ref.rollout.name == "vllm" and importlib.util.find_spec("vllm") is None:
        # validate_config asks the installed vLLM for its largest LoRA rank; without vLLM it fails with "vllm
        # version None not supported"
        raise ConfigError(f"verl's validate_config checks LoRA rank {lora_rank} against the installed vLLM, and vLLM "
                          "is not installed here; check this config where vLLM is (a GPU node), or without LoRA")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # "Disabled critic as algorithm.adv_estimator != gae"
            validate_config(config=config, use_reference_policy=need_reference_policy(config),
                            use_critic=need_critic(config))
    except (AssertionError, ValueError, TypeError) as e:
        raise ConfigError(f"verl's validate_config rejected the config: {first_line(e)}") from None


