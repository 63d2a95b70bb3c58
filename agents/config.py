"""Agent configs: immutable, hashable mappings merged from per-agent defaults and checked against them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator, Optional

import numpy as np

# Config keys filled in by ``create`` from the example batch; they let ``load_agent`` rebuild an agent from a file.
DERIVED_KEYS = ("observation_shape", "observation_dtype", "action_dim")


def _freeze(value: Any) -> Any:
    """Lists become tuples and mappings become ``FrozenConfig`` so the config can be hashed by ``jax.jit``."""
    if isinstance(value, Mapping):
        return FrozenConfig(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


class FrozenConfig(Mapping):
    """An immutable, hashable mapping of config values; reads like a dict (``config["lr"]``)."""

    __slots__ = ("_items", "_hash")

    def __init__(self, values: Mapping[str, Any] = ()):
        items = dict(values)
        self._items = {key: _freeze(items[key]) for key in sorted(items)}
        self._hash = hash(tuple(self._items.items()))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenConfig):
            return self._items == other._items
        return isinstance(other, Mapping) and self._items == {key: _freeze(val) for key, val in other.items()}

    def __repr__(self) -> str:
        return f"FrozenConfig({self._items!r})"

    def replace(self, **updates: Any) -> "FrozenConfig":
        return FrozenConfig({**self._items, **updates})

    def to_dict(self) -> dict:
        """A plain, msgpack/JSON-friendly dict (tuples become lists)."""
        return _thaw(self)


def merge_config(agent_name: str, defaults: Mapping[str, Any], overrides: Optional[Mapping[str, Any]]) -> FrozenConfig:
    """Defaults updated by ``overrides``; an unknown key is an error that lists the valid keys."""
    overrides = dict(overrides or {})
    allowed = set(defaults) | set(DERIVED_KEYS)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise KeyError(
            f"unknown config key(s) {unknown} for agent {agent_name!r}; valid keys: {sorted(defaults)}"
        )
    return FrozenConfig({**defaults, **overrides})


def make_config(agent_name: str, overrides: Optional[Mapping[str, Any]] = None) -> FrozenConfig:
    """The full config of a registered agent: its ``get_config()`` defaults merged with ``overrides``, resolved by
    the agent class itself (so e.g. a FiDec ``preset`` becomes explicit values, as at creation)."""
    # The registry lives in the package root, which imports this module; import it lazily to avoid a cycle.
    from fidec_gym.agents import agent_class

    return agent_class(agent_name).make_config(overrides)
