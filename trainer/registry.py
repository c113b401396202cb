"""Explicit registries that turn ``dict(type=..., **kwargs)`` configs into objects.

``type`` may be a registered name (``"DigitsCNN"``), a dotted import path (``"my_pkg.models.Net"``) or,
in Python configs, the class itself. An unknown name lists what is registered and the nearest match.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torchyard.trainer.config import ConfigError


class Registry:
    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, Callable] = {}

    def register(self, obj: Callable | None = None, *, name: str | None = None, force: bool = False):
        """Use as ``@MODELS.register()`` / ``@MODELS.register(name="x")`` or call ``MODELS.register(cls)``."""

        def add(target: Callable) -> Callable:
            key = name or target.__name__
            if key in self._entries and self._entries[key] is not target and not force:
                raise KeyError(f"{key!r} is already registered in {self.name} by {self._entries[key]!r}")
            self._entries[key] = target
            return target

        return add(obj) if obj is not None else add

    def register_all(self, objects: Iterable[Callable]) -> None:
        for obj in objects:
            self.register(obj, force=True)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, type_: str | Callable, where: str = "type") -> Callable:
        if callable(type_):
            return type_
        if not isinstance(type_, str):
            raise ConfigError(f"{where}: expected a {self.name} name, a dotted import path or a class, "
                              f"got {type_!r}")
        if type_ in self._entries:
            return self._entries[type_]
        if "." in type_:
            return _import_dotted(type_, where)
        nearest = difflib.get_close_matches(type_, self._entries, n=1)
        hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
        if _default_scope:
            hint += (f" (default_scope={_default_scope!r}: a type only {_default_scope} provides is not part "
                     "of torchyard; port it and register it)")
        shown = repr(type_) if len(type_) <= 100 else f"{type_[:80]!r}... ({len(type_)} characters)"
        raise ConfigError(
            f"{where}: {shown} is not a registered {self.name}.{hint} "
            f"Registered: {', '.join(self.names())}. "
            "Register it with @register() in a module listed in custom_imports, or give a dotted import path."
        )

    def build(self, cfg: dict, where: str | None = None, **default_args: Any) -> Any:
        """Build ``cfg['type'](**rest, **default_args)``; ``where`` names the config key in errors."""
        where = where or self.name
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ConfigError(f"{where}: expected a dict with a 'type' key, got {cfg!r}")
        kwargs = {key: value for key, value in cfg.items() if key != "type"}
        for key, value in default_args.items():
            kwargs.setdefault(key, value)
        factory = self.get(cfg["type"], where=f"{where}.type")
        try:
            inspect.signature(factory).bind(**kwargs)
        except TypeError as err:
            raise ConfigError(f"{where}: wrong arguments for "
                              f"{getattr(factory, '__name__', factory)}: {err}") from None
        except ValueError:  # some builtins have no signature; let the call itself complain
            pass
        name = getattr(factory, "__name__", factory)
        _check_simple_types(factory, kwargs, where)
        try:
            return factory(**kwargs)
        except (TypeError, ValueError, MemoryError) as err:  # e.g. lr="fast", a negative size
            raise ConfigError(f"{where}: {name} rejected its arguments: {_first_line(err)}") from err
        except RuntimeError as err:
            if "can't allocate memory" not in str(err) and "out of memory" not in str(err):
                raise
            raise ConfigError(f"{where}: building {name} needs more memory than there is: "
                              f"{_first_line(err)}; check its sizes") from err


SIMPLE_TYPES = {int: (int,), float: (int, float), bool: (bool,), str: (str,), type(None): (type(None),)}


def _check_simple_types(factory: Callable, kwargs: dict[str, Any], where: str) -> None:
    """Refuse a value whose type contradicts a plain annotation (``channels: int``, ``eps: float | None``)
    before the factory turns it into an internal error far from the config key. Richer annotations are
    left to the factory."""
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # a hint that cannot be resolved is no reason to refuse the config
        return
    for key, value in kwargs.items():
        allowed = _simple_types(hints.get(key))
        if (allowed and not isinstance(value, allowed)) or (allowed == (int,) and isinstance(value, bool)):
            expected = " or ".join(sorted({"None" if t is type(None) else t.__name__ for t in allowed}))
            raise ConfigError(f"{where}.{key}: expected {expected}, got {value!r} ({type(value).__name__})")


def _simple_types(hint: Any) -> tuple[type, ...] | None:
    """The types a plain annotation allows, or None when it is richer than ints, floats, bools and strs."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    members = typing.get_args(hint) if union else (hint,)
    if not all(member in SIMPLE_TYPES for member in members):
        return None
    return tuple(t for member in members for t in SIMPLE_TYPES[member])


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


_default_scope: str | None = None


def set_default_scope(scope: str | None) -> None:
    """A config's ``default_scope`` (``"mmseg"``): any scope finds torchyard's types, and an unknown type's
    error names the scope it was looked for in."""
    global _default_scope
    _default_scope = scope


def _import_dotted(path: str, where: str) -> Callable:
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        if "." not in module_name and err.name == module_name:  # "mmseg.EncoderDecoder": a scoped name
            raise ConfigError(f"{where}: {path!r} is {attr!r} of scope {module_name!r}, which is not "
                              f"installed; torchyard's own types need no scope (type={attr!r})") from err
        raise ConfigError(f"{where}: cannot import module {module_name!r} for {path!r}: {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}") from None


def import_custom_modules(custom_imports: dict | None) -> None:
    """Honour ``custom_imports = dict(imports=[...], allow_failed_imports=False)`` so that modules
    register.
    """
    if not custom_imports:
        return
    imports = custom_imports.get("imports", [])
    if isinstance(imports, str):
        imports = [imports]
    # Console scripts do not put the working directory on sys.path the way `python tools/train.py` does.
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    for module_name in imports:
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            if custom_imports.get("allow_failed_imports", False):
                print(f"warning: custom_imports: could not import {module_name!r}: {err}", file=sys.stderr)
                continue
            raise ConfigError(f"custom_imports: could not import {module_name!r}: {err}. "
                              "Check the module name and that it is importable from the working "
                              "directory.") from err


MODELS = Registry("model")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
METRICS = Registry("metric")
HOOKS = Registry("hook")
OPTIMIZERS = Registry("optimizer")
PARAM_SCHEDULERS = Registry("param scheduler")
