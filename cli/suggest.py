"""The commonest input error, a typo, in one line with the nearest valid name.

Hydra reports an unknown key as a 7-line block whose advice (append with ``+``) is wrong for a structured config,
and it accepts ``+trainer.stpes=5`` or ``+rewrd=outcome`` silently, as a new key nothing reads. This module turns
both into ``unknown key trainer.stpes (did you mean trainer.steps?)`` and an unknown option of a config group into
``unknown option model=tny (did you mean model=tiny?)``. Torch-free: it runs before anything loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from drox.registry import Registry

SEE_KEYS = "`drox config` prints every key"


def nearest(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate closest to ``word`` (difflib's ratio >= 0.6), or None."""
    found = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return found[0] if found else None


def component_option_blocks() -> Dict[str, set]:
    """``{options root: names}``: where a component chosen by a plain string keeps its options
    (``+trainer.<objective>.<option>=...``, drox.components), so ``trainer.<name>`` of a registered objective is
    not a typo. Torch-free: the registries only."""
    from drox import components

    blocks: Dict[str, set] = {}
    for registry in vars(components).values():
        if isinstance(registry, Registry) and registry.options_root:
            blocks.setdefault(registry.options_root, set()).update(registry.names())
    return blocks


def option_overrides(overrides: Sequence[str]) -> List[str]:
    """``overrides`` with ``++`` put before each plain ``<options root>.<name>.<option>=value`` whose block is a free
    dict in the schema, or absent from it (a plugin's): the options of a component chosen by a plain string, e.g.
    ``trainer.advantage.nsr.scale=2`` for ``trainer.advantage.estimator=nsr``. Hydra refuses a key a struct config
    does not hold yet unless it is added with ``+``, and refuses ``+`` for a key that an alias
    (``+reward=negative_only``) already set, so ``++`` (add or override) makes one spelling work in both cases.
    The registry still checks the option's name and value (:meth:`drox.registry.Registry.parse`). Keys of typed
    blocks, prefixed keys and ``hydra.*`` pass unchanged."""
    from drox.config import DroxConfig

    blocks = component_option_blocks()
    schema = None
    out: List[str] = []
    for text in overrides:
        key, eq, _ = text.partition("=")
        if eq and key[:1] not in "+~" and not key.startswith("hydra"):
            for root, names in blocks.items():
                rest = key[len(root) + 1:].split(".") if key.startswith(root + ".") else []
                if len(rest) >= 2 and rest[0] in names:
                    schema = schema if schema is not None else OmegaConf.structured(DroxConfig)
                    node = OmegaConf.select(schema, f"{root}.{rest[0]}", default=None)
                    if node is None or (isinstance(node, DictConfig)
                                        and not dataclasses.is_dataclass(OmegaConf.get_type(node))):
                        text = "++" + text
                    break
        out.append(text)
    return out


def undeclared_keys(cfg: DictConfig, option_blocks: Optional[Dict[str, set]] = None) -> List[Tuple[str, List[str]]]:
    """``(dotted key, the keys its node declares)`` for every key of ``cfg`` that the structured schema of its node
    does not declare (what ``+key=value`` adds without a word). Nodes that are plain dicts (e.g. ``reward``, whose
    keys are the chosen sources) are walked into but hold any key, as does ``<root>.<name>`` for a component
    registered with options under ``<root>`` (``option_blocks``, :func:`component_option_blocks`)."""
    found: List[Tuple[str, List[str]]] = []
    option_blocks = option_blocks or {}

    def walk(node, prefix: str) -> None:
        if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
            return
        schema = OmegaConf.get_type(node)
        declared = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
        for key in node.keys():
            path = f"{prefix}{key}"
            if declared is not None and key not in declared and key not in option_blocks.get(prefix[:-1], ()):
                found.append((path, sorted(declared)))
            else:
                walk(node._get_node(key), f"{path}.")

    walk(cfg, "")
    return found


# Keys that moved: (old prefix, what to write instead). PSR, NSR and W-REINFORCE were reward sources before they
# became advantage estimators on the outcome reward (docs/algorithms.md); a run folder written before then holds
# their old blocks.
MOVED_KEYS = [
    ("reward.positive_only", "trainer.advantage.psr"),
    ("reward.negative_only", "trainer.advantage.nsr"),
    ("reward.w_reinforce", "trainer.advantage.w_reinforce"),
]


def moved_key_message(key: str) -> Optional[str]:
    """One line for a key under a prefix of :data:`MOVED_KEYS`, naming where its options are now; else None."""
    for old, new in MOVED_KEYS:
        if key == old or key.startswith(old + "."):
            name = old.rpartition(".")[2]
            return (f"{key} is an old key: {name} is now the advantage estimator {new.rpartition('.')[2]} on the "
                    f"outcome reward (+reward={name} still selects it); its options are {new}.* "
                    f"(e.g. {new}{key[len(old):] or '.scale'}=...)")
    return None


def moved_keys_message(cfg: DictConfig) -> Optional[str]:
    """:func:`moved_key_message` for the first reward block of ``cfg`` that moved (a config written before the
    move, or ``+reward.negative_only.weight=1``), else None."""
    rewards = OmegaConf.select(cfg, "reward", default=None)
    for name in (rewards.keys() if isinstance(rewards, DictConfig) else ()):
        moved = moved_key_message(f"reward.{name}")
        if moved:
            return moved
    return None


def unknown_key_message(key: str, siblings: Sequence[str]) -> str:
    """``unknown key a.b.c (did you mean a.b.d?); ...`` for a key whose last part is not among ``siblings``."""
    moved = moved_key_message(key)
    if moved:
        return moved
    parent, _, leaf = key.rpartition(".")
    guess = nearest(leaf, siblings)
    hint = f" (did you mean {parent + '.' if parent else ''}{guess}?)" if guess else ""
    return f"unknown key {key}{hint}; {SEE_KEYS}"


_NOT_IN = re.compile(r"Key '([^']+)' (?:is )?not in (?:struct|'[^']*')")
_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_GROUP = re.compile(r"Could not find '([^']+)/([^'/]+)'")
_CHOICE = re.compile(r"(\S+)=(\S+) is not allowed; choose one of: (.+)$", re.M)


def explain(text: str, overrides: Sequence[str], keys_at: Callable[[str], Optional[List[str]]]) -> Optional[str]:
    """One line for a Hydra/OmegaConf error ``text`` (its message and cause joined) that is a typo: an unknown key
    or an unknown option of a group; None for any other error. ``keys_at(dotted)`` lists the keys of the config
    node at ``dotted`` ("" the root), None when there is no such node."""
    group = _GROUP.search(text)
    if group is not None:
        name, option = group.group(1), group.group(2)
        options = re.split(r"[,\s]+", text.split("available options:", 1)[1].strip()) if "available options:" in text \
            else []
        guess = nearest(option, options)
        added = "+" if any(o.startswith(f"+{name}=") for o in overrides) else ""
        hint = f" (did you mean {added}{name}={guess}?)" if guess else ""
        listed = f"; available options: {', '.join(options)}" if options else ""
        return f"unknown option {added}{name}={option}{hint}{listed}"
    choice = _CHOICE.search(text)
    if choice is not None:  # a registered component's or a Literal option's name
        key, value, options = choice.group(1), choice.group(2), choice.group(3).strip()
        guess = nearest(value, re.split(r",\s*", options))
        hint = f" (did you mean {key}={guess}?)" if guess else ""
        return f"{key}={value} is not allowed{hint}; choose one of: {options}"
    override, missing = _OVERRIDE.search(text), _NOT_IN.search(text)
    if override is None or missing is None:
        return None
    key = override.group(1)
    parts = key.split(".")
    leaf = missing.group(1)
    depth = parts.index(leaf) if leaf in parts else len(parts) - 1
    parent = ".".join(parts[:depth])
    siblings = keys_at(parent)
    if siblings is None:
        return None
    moved = moved_key_message(key)
    if moved:
        return moved
    guess = nearest(leaf, siblings)
    unknown = ".".join(parts[:depth + 1])
    hint = f" (did you mean {parent + '.' if parent else ''}{guess}?)" if guess else ""
    return f"unknown key {unknown}{hint}; {SEE_KEYS}"
