"""OpenMMLab-style configs: ``.py``/``.yaml``/``.json`` files, ``_base_`` inheritance, ``--cfg-options``.

Pure standard library (plus PyYAML): the operator validates ``cfgOptions`` with this same parser and must
not import torch.

    cfg = Config.fromfile("configs/digits_cnn.py", cfg_options=["optim_wrapper.optimizer.lr=0.05"])
    cfg.train_cfg.max_epochs
"""

from __future__ import annotations

import json
import keyword
import math
import pprint
import re
import traceback
import types
from pathlib import Path
from typing import Any

import yaml

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
SUFFIXES = (".py", ".yaml", ".yml", ".json")


class ConfigError(ValueError):
    """A config file or option is wrong; the message says where and what to do."""


class ConfigDict(dict):
    """A dict whose keys also read as attributes, recursively (``cfg.model.type``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, _wrap(value))

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            # str() first: YAML keys may mix ints and strings, which do not sort together
            keys = ", ".join(sorted(map(str, self))) or "none"
            raise AttributeError(f"config has no key {name!r}; it has: {keys}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def to_dict(self) -> dict:
        return {key: _unwrap(value) for key, value in self.items()}


def _wrap(value: Any) -> Any:
    if isinstance(value, ConfigDict):
        return value
    if isinstance(value, dict):
        return ConfigDict(value)
    if isinstance(value, list):
        return [_wrap(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_wrap(item) for item in value)
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, ConfigDict):
        return value.to_dict()
    if isinstance(value, list):
        return [_unwrap(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_unwrap(item) for item in value)
    return value


class Config(ConfigDict):
    """A loaded config; ``filename`` is the file it came from (None when built from a dict)."""

    filename: str | None

    def __init__(self, cfg: dict | None = None, filename: str | None = None) -> None:
        super().__init__(cfg or {})
        object.__setattr__(self, "filename", filename)

    @classmethod
    def fromfile(cls, path: str | Path, cfg_options: list[str] | dict | None = None) -> Config:
        path = Path(path)
        cfg = cls(_load_with_bases(path.resolve(), chain=()), filename=str(path))
        if cfg_options:
            options = cfg_options if isinstance(cfg_options, dict) else parse_cfg_options(cfg_options)
            cfg.merge_from_dict(options)
        return cfg

    def merge_from_dict(self, options: dict[str, Any]) -> None:
        """Apply ``{"a.b.0.c": value}`` overrides: dotted keys, list indices as numbers."""
        for dotted_key, value in options.items():
            _set_dotted(self, dotted_key, value)

    def dump(self, path: str | Path) -> Path:
        """Write the merged config as a Python config that ``Config.fromfile`` reads back unchanged."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.pretty_text, encoding="utf-8")
        return path

    @property
    def pretty_text(self) -> str:
        printer = _PythonPrinter(width=100, sort_dicts=False)
        lines = []
        for key, value in to_primitive(self.to_dict()).items():
            if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
                raise ConfigError(f"config {self.filename}: top-level key {key!r} is not a Python name, so "
                                  "it cannot be written to a Python config; nest it under a named key")
            lines.append(f"{key} = {printer.pformat(value)}")
        return "\n".join(lines) + "\n"

    def __reduce__(self):  # pickled configs travel to DataLoader workers and spawned processes
        return (type(self), (self.to_dict(), self.filename))


class _PythonPrinter(pprint.PrettyPrinter):
    """pprint, except that inf and nan come out as expressions Python can read back."""

    def format(self, obj: Any, context: dict, maxlevels: int, level: int) -> tuple[str, bool, bool]:
        if isinstance(obj, float) and not math.isfinite(obj):
            return f"float('{obj}')", True, False
        return super().format(obj, context, maxlevels, level)


def to_primitive(value: Any) -> Any:
    """Replace classes and functions (``type=MyModel`` in Python configs) by their dotted import paths."""
    if isinstance(value, dict):
        return {key: to_primitive(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_primitive(item) for item in value)
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
        return f"{value.__module__}.{value.__qualname__}"
    return value


def _load_with_bases(path: Path, chain: tuple[Path, ...]) -> dict:
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"config {path} inherits from itself through _base_: {cycle}")
    raw = _load_file(path, included_from=chain[-1] if chain else None)
    bases = raw.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list | tuple) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file path or a list of file paths, got {bases!r}")
    merged: dict = {}
    for base in bases:
        merged = merge(merged, _load_with_bases((path.parent / base).resolve(), (*chain, path)))
    return merge(merged, raw)


def _load_file(path: Path, included_from: Path | None) -> dict:
    where = f" (a _base_ of {included_from})" if included_from else ""
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"config {path}{where} must end in one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise ConfigError(f"config file {path}{where} does not exist; check the path (relative paths in "
                          "_base_ are relative to the file that names them)")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return _load_python(path, text, where)
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"config {path}{where} is not valid JSON: line {err.lineno}, column {err.colno}: "
                          f"{err.msg}") from None
    except yaml.YAMLError as err:  # one line: where, and what (PyYAML's own text spans several)
        mark = getattr(err, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config {path}{where} is not valid YAML: {at}{problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}{where} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def _load_python(path: Path, text: str, where: str) -> dict:
    try:
        code = compile(text, str(path), "exec")
    except SyntaxError as err:
        raise ConfigError(f"config {path}{where}, line {err.lineno}: {err.msg}") from None
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": f"torchyard_config_{path.stem}"}
    try:
        exec(code, namespace)
    except Exception as err:
        frames = traceback.extract_tb(err.__traceback__)
        line = [frame.lineno for frame in frames if frame.filename == str(path)][-1]
        raise ConfigError(f"config {path}{where}, line {line}, raised {type(err).__name__}: {err}") from err
    return {
        key: value for key, value in namespace.items()
        if not key.startswith("__") and not isinstance(value, types.ModuleType | types.FunctionType | type)
    }


def merge(base: dict, child: dict) -> dict:
    """Deep-merge ``child`` onto ``base``: dicts merge key by key unless the child says ``_delete_=True``."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict):
            value = dict(value)
            replace = value.pop(DELETE_KEY, False)
            if not replace and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = merge({}, value)
        else:
            out[key] = value
    return out


def _set_dotted(cfg: dict, dotted_key: str, value: Any) -> None:
    parts = dotted_key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list | tuple):
            if not re.fullmatch(r"-?[0-9]+", part):
                raise ConfigError(f"--cfg-options {dotted_key}: {'.'.join(parts[:depth])} is a list; "
                                  f"index it with a number, not {part!r}")
            index = int(part)
            if not -len(node) <= index < len(node):
                raise ConfigError(f"--cfg-options {dotted_key}: index {index} is out of range for "
                                  f"{'.'.join(parts[:depth])}, which has {len(node)} items")
            if last:
                if isinstance(node, tuple):
                    raise ConfigError(f"--cfg-options {dotted_key}: {'.'.join(parts[:depth])} is a tuple; "
                                      "replace it whole instead")
                node[index] = _wrap(value)
                return
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
                return
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(f"--cfg-options {dotted_key}: {'.'.join(parts[:depth])} is "
                              f"{type(node).__name__} {node!r}, so it has no key {part!r}")


def parse_cfg_options(options: list[str]) -> dict[str, Any]:
    """Parse ``["a.b=1", "c=[1,2]", "d=(1,2)", "e=True", "f=None", "g=str", "h=1,2"]`` into ``{key: value}``.

    Values follow OpenMMLab's DictAction: numbers, True/False, None, lists ``[...]``, tuples ``(...)``,
    comma-separated lists, and anything else as a string (quotes optional).
    """
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--cfg-options {option!r}: expected KEY=VALUE, e.g. train_cfg.max_epochs=5")
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--cfg-options {option!r}: the key {key!r} is empty or has an empty part; "
                              "use dotted names such as optim_wrapper.optimizer.lr")
        try:
            parsed[key] = parse_value(raw)
        except ConfigError as err:
            raise ConfigError(f"--cfg-options {option!r}: {err}") from None
    return parsed


def parse_value(raw: str) -> Any:
    """Parse one ``--cfg-options`` value; a comma at the top level makes a list (``1,2`` and ``1,``)."""
    items, pos = _parse_items(raw, 0)
    if pos < len(raw):
        raise ConfigError(f"unexpected {raw[pos]!r} at position {pos} in {raw!r}")
    return items[0] if len(items) == 1 and not raw.rstrip().endswith(",") else items


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _parse_items(text: str, pos: int) -> tuple[list, int]:
    """Comma-separated items up to a closing bracket or the end; a trailing comma is allowed."""
    items: list = []
    while True:
        item, pos = _parse_atom(text, pos)
        items.append(item)
        pos = _skip_spaces(text, pos)
        if pos == len(text) or text[pos] != ",":
            return items, pos
        pos = _skip_spaces(text, pos + 1)
        if pos == len(text) or text[pos] in ")]":
            return items, pos


def _parse_atom(text: str, pos: int) -> tuple[Any, int]:
    pos = _skip_spaces(text, pos)
    if pos < len(text) and text[pos] in "[(":
        closer = "]" if text[pos] == "[" else ")"
        pos = _skip_spaces(text, pos + 1)
        items: list = []
        if pos < len(text) and text[pos] != closer:
            items, pos = _parse_items(text, pos)
        if pos == len(text) or text[pos] != closer:
            raise ConfigError(f"unbalanced brackets in {text!r}: expected {closer!r} at position {pos}")
        return (items if closer == "]" else tuple(items)), pos + 1
    if pos < len(text) and text[pos] in "'\"":
        end = text.find(text[pos], pos + 1)
        if end < 0:
            raise ConfigError(f"unterminated quote in {text!r}")
        return text[pos + 1: end], end + 1
    end = pos
    while end < len(text) and text[end] not in ",[]()":
        end += 1
    if end < len(text) and text[end] in "[(":
        raise ConfigError(f"unexpected {text[end]!r} at position {end} in {text!r}")
    return _scalar(text[pos:end].strip()), end


def _scalar(word: str) -> Any:
    # int, then float, as OpenMMLab's DictAction does: "1e-3", "-2", "inf" are numbers, "0x10" is a string
    for number in (int, float):
        try:
            return number(word)
        except ValueError:
            pass
    lowered = word.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return word
