"""``safe_config_values`` -- RecBole's ``Config`` runs Python found in config values, and its YAML loader
builds Python objects and expands aliases without bound.

RecBole 1.2.1's ``Config._convert_config_dict`` calls ``eval()`` on every string value of ``config_dict``
(``run_recbole(config_dict=...)``, and so every value this package passes on: ``--set``, ``--key=value``,
``recgoat bench --tuned best.yaml``, ``recgoat tune --grid``) and of the command line (``--key=value``), so a
value such as ``"__import__('os').system('id') or 1e-4"`` runs a command. Its YAML loader is
``yaml.FullLoader`` (``!!python/name:``, ``!!python/object:`` tags), and an alias-bomb YAML ("billion laughs")
expands into all memory once RecBole logs the config.

Here (:func:`install`):

- :func:`convert_value` replaces ``eval``: a string that is a Python *literal* (``1e-4``, ``[10, 20]``,
  ``True``, ``None``, ``'RS'``) becomes that value, exactly as ``eval`` made it; ``true`` / ``false`` become
  booleans and any other plain text stays a string, as before. A string that is *code* -- a call, an attribute,
  a subscript, a lambda, a comprehension, an operator on numbers -- is one :class:`ConfigError` naming the key;
  nothing in it is evaluated. Values that are not strings are passed through unchanged.
- ``Config._build_yaml_loader`` returns :class:`BoundedLoader`: YAML's safe loader (plain data only; a Python
  tag is a ``yaml`` error) with RecBole's float resolver (so ``1e-4`` is still a float), which refuses a
  document that expands to more than :data:`MAX_NODES` nodes through aliases.

:func:`load_yaml` is the same loader for the YAML files this package reads itself (``best.yaml``, grids).
"""

from __future__ import annotations

import ast
import re
from typing import Any

import yaml

from recgoat_recbole.config_check import ConfigError

#: what :func:`install` replaced (RecBole's own functions)
ORIGINALS: dict[str, Any] = {}

__all__ = ["convert_value", "check_data", "BoundedLoader", "load_yaml", "MAX_NODES", "install"]

#: the most nodes a YAML document may hold once its aliases are expanded (a config file has a few hundred)
MAX_NODES = 100_000

#: what ``eval`` in RecBole's ``_convert_config_dict`` kept as a value (anything else stayed the string)
_KEPT = (str, int, float, list, tuple, dict, bool)

#: expression nodes that make ``eval`` run something: a call, a function, a comprehension, an f-string, ...
_RUNS = (ast.Call, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.NamedExpr,
         ast.Await, ast.Yield, ast.YieldFrom, ast.JoinedStr, ast.Starred)


def _is_code(text: str) -> bool:
    """Whether ``text`` is a Python expression that ``eval`` would *run or compute* (not a literal, not text).

    Code: anything with a call, a lambda, a comprehension or an f-string, and any expression of constants alone
    that is not a literal (``1/1000``, ``2**10**10``, ``().__class__``), which ``eval`` would compute. Text:
    whatever mentions a name (``profiles.npz``, ``amazon-books``, ``yelp-2018``, ``NDCG@10``), which ``eval``
    could not evaluate (a NameError) and so kept as the string, and whatever is not Python at all.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False  # not Python at all: plain text
    nodes = list(ast.walk(tree))
    if any(isinstance(node, _RUNS) for node in nodes):
        return True
    return not any(isinstance(node, ast.Name) for node in nodes)


def convert_value(key: str, value: Any) -> Any:
    """A config value as RecBole's ``eval`` made it, without evaluating anything (see the module docstring)."""
    if not isinstance(value, str):
        return value
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    else:
        return parsed if parsed is None or isinstance(parsed, _KEPT) else value
    if _is_code(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ConfigError(f"config key {key!r}: {shown!r} is a Python expression, not a value; write the value "
                          "itself (a number, true/false, a string, a [list] or a {dict}): config values are "
                          "never evaluated")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return value


def check_data(values: Any, source: str, path: str = "") -> None:
    """Raise :class:`ConfigError` (naming ``source`` and the key) for a top-level string of ``values`` (or an
    entry of a value list) that :func:`convert_value` would refuse: checked where a file is read, before any
    run starts."""
    if isinstance(values, dict):
        for key, value in values.items():
            check_data(value, source, f"{path}.{key}" if path else str(key))
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            check_data(value, source, f"{path}[{i}]")
    elif isinstance(values, str):
        try:
            convert_value(path, values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _convert_config_dict(self: Any, config_dict: dict) -> dict:
    """``Config._convert_config_dict`` of RecBole 1.2.1 with :func:`convert_value` in place of ``eval``."""
    for key in config_dict:
        config_dict[key] = convert_value(key, config_dict[key])
    return config_dict


class BoundedLoader(yaml.SafeLoader):
    """YAML's safe loader with RecBole's float resolver (``1e-4`` is a float), refusing alias bombs."""

    __recgoat_yaml_loader__ = True

    def construct_document(self, node: yaml.Node) -> Any:
        _check_size(node, getattr(self, "name", "<yaml>"))
        return super().construct_document(node)


def _check_size(root: yaml.Node, name: str) -> None:
    """Count the nodes ``root`` expands to (an alias counts its whole target again), without expanding."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                raise ConfigError(f"{name}: the YAML expands to more than {MAX_NODES:,} values through its "
                                  "aliases (&anchor / *alias): refused")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigError(f"{name}: the YAML refers to itself through an alias: refused")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


# RecBole's float resolver (recbole.config.Config._build_yaml_loader), on our loader only
BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        """^(?:
     [-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\\.[0-9_]*
    |[-+]?\\.(?:inf|Inf|INF)
    |\\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(path: str) -> Any:
    """One YAML file as RecBole's (patched) ``Config`` reads it: plain data, bounded, floats as RecBole's."""
    with open(path, encoding="utf-8") as f:
        loader = BoundedLoader(f)
        loader.name = path
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()


def _build_yaml_loader(self: Any) -> type:
    return BoundedLoader


def install() -> None:
    from recbole.config.configurator import Config

    ORIGINALS.update({"_convert_config_dict": Config._convert_config_dict,
                                       "_build_yaml_loader": Config._build_yaml_loader})
    Config._convert_config_dict = _convert_config_dict
    Config._build_yaml_loader = _build_yaml_loader
