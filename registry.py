"""One registry for every named component: reward sources, gates, filters, advantage estimators,
multi-objective combiners, policy losses, loss aggregations and KL estimators.

A component is a function registered under a name, optionally with an options dataclass (one field
per option, a docstring under each, defaults = the component's defaults). The registry is the source
of truth: config validation reads the allowed names from it, ``drox config`` and the CLI list them, and
a component defined in a user's own file (``plugins=[my_rewards.py]``) is selectable exactly like a
built-in one.

Options are parsed here, once, before any model loads (:meth:`Registry.parse`): unknown keys, values of
the wrong type (checked against the dataclass's annotations: ``float``, ``int``, ``bool``, ``str``,
``Optional[...]``, ``List[...]``, ``Dict[...]``, ``Literal[...]`` for a closed set of choices) and the
ranges the dataclass's ``__post_init__`` checks all fail with one line naming the key, e.g.
``reward.random.p=abc: expected a float``.

A name can also be *declared* before its code is imported (lm-evaluation-harness style, :meth:`Registry.declare`):
``"module"`` or ``"module:object"`` plus the cheap facts the config checks read (e.g. a task's ``multiturn``); the
module is imported the first time the component itself is asked for, and registers it with its options there.
The facts a registration writes as literals (:data:`SOURCE_FACTS`, e.g. ``verl="module:function"`` or
``verl="why it cannot run there"``) are read from a declared module's source (``ast``), so they are known before
it is imported too.

This module imports nothing else from drox except the error type, so every layer can register into it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from drox.errors import ConfigError

__all__ = ["Component", "Registry", "SOURCE_FACTS", "coerce_value", "parse_dataclass"]

PACKAGE_DIR = Path(__file__).resolve().parent  # the drox package (the repository root)
CONF_DIR = PACKAGE_DIR / "conf"  # drox's own Hydra configs
SOURCE_FACTS = ("verl",)
"""Keywords of a registration that :meth:`Registry.meta` reads from a declared module's source when their value is a
literal: ``verl``, how the component runs under the verl backend (drox.integrations.verl.launch)."""


@dataclass
class Component:
    """One registered component: ``fn`` under ``name``; ``options`` its options dataclass (or None);
    ``meta`` what the component declares to the loop (e.g. a filter's ``kind`` and ``refill``)."""

    name: str
    fn: Callable
    options: Optional[type] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    module: str = ""


class Registry:
    """Name -> :class:`Component`, for one kind of component.

    ``key``: where the name is chosen in the config (``reward`` for ``+reward=<name>``,
    ``trainer.advantage.estimator`` for an estimator); ``what``: the kind in words, for messages;
    ``config_group``: the Hydra group whose ``+group=name`` selects a component (options stored in Hydra's
    ConfigStore under ``<group>/<name>``, nested under the name, so that a component defined in a plugin
    needs no YAML file); None for components chosen by a plain string value. ``options_root``: for those, where
    a component's options are in the config (``<options_root>.<name>``; drox.pipeline reads them).
    """

    def __init__(self, key: str, what: str, config_group: Optional[str] = None, options_root: Optional[str] = None):
        self.key, self.what, self.config_group, self.options_root = key, what, config_group, options_root
        self._items: Dict[str, Component] = {}
        self._lazy: Dict[str, Tuple[str, Dict[str, Any]]] = {}  # declared, not imported yet: name -> (target, meta)

    # ---------------------------------------------------------------------------------------------- register
    def register(self, name: str, options: Optional[type] = None, **meta: Any) -> Callable[[Callable], Callable]:
        """Decorator: register ``fn`` as ``name`` with its options dataclass and declared ``meta``."""
        if options is not None and not dataclasses.is_dataclass(options):
            raise TypeError(f"{self.what} {name!r}: options must be a dataclass, got {options!r}")

        def deco(fn: Callable) -> Callable:
            declared = self._lazy[name][0].partition(":")[0] if name in self._lazy else None
            if name in self._items or (declared is not None and declared != getattr(fn, "__module__", "")):
                other = self._items[name].module if name in self._items else declared
                raise ConfigError(f"{self.what} '{name}' is registered twice (first by {other or 'drox'}); "
                                  "choose another name")
            declared = self._lazy.pop(name, (None, {}))[1]  # a declared built-in: its module is registering it now
            self._items[name] = Component(name, fn, options, {**declared, **meta}, getattr(fn, "__module__", ""))
            if options is not None and self.config_group is not None:
                _store_in_hydra(self.config_group, name, options)
            return fn

        return deco

    def declare(self, name: str, target: str, **meta: Any) -> None:
        """Declare ``name`` without importing it: ``target`` is ``"module"`` (which registers ``name`` when
        imported) or ``"module:object"`` (registered here, with ``meta``, if the module does not). ``meta``: what the
        config checks read before anything is imported (:meth:`meta`)."""
        if name in self._items or name in self._lazy:
            raise ConfigError(f"{self.what} '{name}' is registered twice; choose another name")
        self._lazy[name] = (target, dict(meta))

    def declare_package(self, package: str, path, decorators: tuple) -> None:
        """Declare every component the modules of ``package`` (its folder ``path``; ``base`` and ``_private``
        modules excepted) register with one of the ``decorators`` and a literal name, found by reading the source
        (``ast``), not by importing it: a new built-in is still one file. A component chosen through a config group
        that has no YAML file is imported now, so that its options are in Hydra's ConfigStore before composing."""
        import ast

        for file in sorted(Path(path).glob("*.py")):
            if file.stem == "base" or file.stem.startswith("_"):
                continue
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                func = getattr(node, "func", None)
                called = getattr(func, "id", None) or getattr(func, "attr", None)
                if (isinstance(node, ast.Call) and called in decorators and node.args
                        and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    name = node.args[0].value
                    if name not in self:
                        self.declare(name, f"{package}.{file.stem}")
                    if self.config_group and not (CONF_DIR / self.config_group / f"{name}.yaml").is_file():
                        self.get(name)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and interactive sessions that define a component twice)."""
        self._items.pop(name, None)
        self._lazy.pop(name, None)

    def _load(self, name: str) -> None:
        """Import a declared component's module (first use)."""
        target, meta = self._lazy[name]
        module, _, attr = target.partition(":")
        obj = importlib.import_module(module)
        if name in self._lazy and attr:  # the module does not register it: the declared object is the component
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._lazy.pop(name)
            self._items[name] = Component(name, obj, None, dict(meta), module)
        if name not in self._items:
            raise ConfigError(f"{self.what} '{name}': importing {target} did not register it")

    # ---------------------------------------------------------------------------------------------- look up
    def names(self) -> List[str]:
        return sorted({*self._items, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def meta(self, name: str) -> Dict[str, Any]:
        """What ``name`` declares, without importing a declared component's module ({} for an unknown name)."""
        if name in self._items:
            return self._items[name].meta
        if name not in self._lazy:
            return {}
        target, meta = self._lazy[name]
        return {**_source_facts(target.partition(":")[0]).get(name, {}), **meta}

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> Component:
        return self.get(name)

    def get(self, name: str) -> Component:
        """The component, or a one-line :class:`ConfigError` listing the registered names."""
        if name in self._lazy:
            self._load(name)
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"{self.key}={name}: unknown {self.what}; available: {', '.join(self.names())}") \
                from None

    # ---------------------------------------------------------------------------------------------- options
    def parse(self, name: str, raw: Optional[Dict[str, Any]]) -> Any:
        """The options dataclass of ``name`` built from the raw mapping ``raw`` (one-line ConfigError on
        an unknown name, an unknown key, a wrong type or a value out of range). Components without an
        options dataclass accept no options and return None."""
        if name not in self:
            raise ConfigError(f"unknown {self.what} '{name}'; available: {', '.join(self.names())}")
        cls = self.get(name).options
        prefix = f"{self.key}.{name}" if self.config_group else self.key
        if cls is None:
            if raw:
                raise ConfigError(f"{prefix} takes no options, got: {', '.join(sorted(raw))}")
            return None
        return parse_dataclass(cls, raw, prefix)


@functools.lru_cache(maxsize=None)
def _source_facts(module: str) -> Dict[str, Dict[str, Any]]:
    """name -> the :data:`SOURCE_FACTS` keywords with a literal value of each ``register...("name", ...)`` call in
    drox module ``module`` (its file read with ``ast``, not imported); {} for a module outside drox's folder."""
    import ast

    parts = module.split(".")
    if parts[0] != "drox":
        return {}
    path = PACKAGE_DIR.joinpath(*parts[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    if not path.is_file():
        return {}
    facts: Dict[str, Dict[str, Any]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        func = getattr(node, "func", None)
        called = getattr(func, "id", None) or getattr(func, "attr", None) or ""
        if not (isinstance(node, ast.Call) and called.startswith("register") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            continue
        for kw in node.keywords:
            if kw.arg in SOURCE_FACTS:
                try:
                    facts.setdefault(node.args[0].value, {})[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:  # not a literal (a callable): known once the module is imported
                    pass
    return facts


def _store_in_hydra(group: str, name: str, options: type) -> None:
    """``+<group>=<name>`` works without a YAML file: the option defaults, nested under ``name``.

    Components with a YAML file ``conf/<group>/<name>.yaml`` (most built-ins: it documents the defaults, and
    some set other keys too) are left to that file; a ConfigStore entry of the same name would turn into a
    schema for it (Hydra's deprecated automatic schema matching). Tests check each file against its dataclass.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if (CONF_DIR / group / f"{name}.yaml").is_file():
        return

    defaults = {}
    for f in dataclasses.fields(options):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            defaults[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            defaults[f.name] = "???"  # required: Hydra reports it missing unless the user sets it
    ConfigStore.instance().store(group=group, name=name, node=OmegaConf.create({name: defaults}),
                                 provider="drox")


# -------------------------------------------------------------------------------------------------- parsing


def parse_dataclass(cls: type, raw: Optional[Dict[str, Any]], prefix: str) -> Any:
    """Build dataclass ``cls`` from ``raw``: check keys, coerce each value to its annotation, then run
    ``__post_init__`` (ranges). Every error is a one-line :class:`ConfigError` naming ``prefix.key``."""
    raw = _plain(raw) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}={raw}: expected a mapping of options")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if isinstance(value, str) and value == "???":
            raise ConfigError(f"{prefix}.{key} is required; set it, e.g. {prefix}.{key}=...")
        values[key] = coerce_value(value, hints.get(key, Any), f"{prefix}.{key}")
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise ConfigError(f"{prefix}: missing required option(s) {', '.join(missing)}; set e.g. {prefix}.{missing[0]}=...")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(msg if msg.startswith(prefix) else f"{prefix}: {msg}") from None


def _plain(value: Any) -> Any:
    """OmegaConf containers (a DictConfig/ListConfig handed over as is) -> plain dicts and lists."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is float:
        return "a float"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin in (list, List):
        return "a list"
    if origin in (dict, Dict):
        return "a mapping"
    return str(tp)


def coerce_value(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to the annotation ``tp``, or a ConfigError ``key=value: expected ...``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> ConfigError:
        shown = value if not isinstance(value, str) else (value or "''")
        return ConfigError(f"{key}={shown}: expected {expected}")

    if tp is Any or tp is typing.Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return coerce_value(value, options[0], key)
        for a in options:
            try:
                return coerce_value(value, a, key)
            except ConfigError:
                continue
        raise bad(" or ".join(_describe(a) for a in options))
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}={value} is not allowed; choose one of: {', '.join(map(str, args))}")
    if value is None:
        raise bad(_describe(tp) + " (not null)")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad("true or false")
    if tp is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise bad("an integer")
    if tp is float:
        if isinstance(value, bool):
            raise bad("a float")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise bad("a float")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad("a string")
    if origin in (list, List, tuple):
        if isinstance(value, (str, int, float, bool)):
            value = [value]  # a single value where a list is expected: a one-element list
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        inner = args[0] if args else Any
        return [coerce_value(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise bad("a mapping")
        inner = args[1] if len(args) == 2 else Any
        return {k: coerce_value(v, inner, f"{key}.{k}") for k, v in value.items()}
    return value
