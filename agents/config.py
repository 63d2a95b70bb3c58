"""Agent configs: immutable, hashable mappings merged from per-agent defaults and checked against them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator, Optional

import numpy as np

from fidec_gym.errors import UnknownNameError

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

    def __init__(self, values: Optional[Mapping[str, Any]] = None):
        items = dict(values) if values is not None else {}
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

    def replace(self, **updates: Any) -> FrozenConfig:
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
        raise UnknownNameError(
            f"unknown config key(s) {unknown} for agent {agent_name!r}; valid keys: {sorted(defaults)}"
        )
    return FrozenConfig({**defaults, **overrides})


def make_config(agent_name: str, overrides: Optional[Mapping[str, Any]] = None) -> FrozenConfig:
    """The full config of a registered agent: its ``get_config()`` defaults merged with ``overrides``, resolved by
    the agent class itself (so e.g. a FiDec ``preset`` becomes explicit values, as at creation)."""
    # The registry lives in the package root, which imports this module; import it lazily to avoid a cycle.
    from fidec_gym.agents import agent_class

    return agent_class(agent_name).make_config(overrides)


def default_config(agent_name: str) -> dict:
    """The defaults of a registered agent (its ``get_config()``)."""
    from fidec_gym.agents import agent_class

    return dict(agent_class(agent_name).get_config())


def check_overrides(
    agent_name: str, overrides: Mapping[str, Any], defaults: Optional[Mapping[str, Any]] = None
) -> None:
    """Check each override's key and value type against the agent's defaults, naming the key and the fix.

    A number where the default is a number, a whole number where it is an int (never 1.5 for a batch size), a list of
    positive whole numbers where it is a tuple of layer widths, a bool where it is a bool, a string where it is a
    string; keys whose default is ``None`` take any value the agent itself validates.
    """
    from fidec_gym.errors import ConfigError

    defaults = default_config(agent_name) if defaults is None else defaults
    merge_config(agent_name, defaults, overrides)  # unknown keys
    for key, value in overrides.items():
        if key not in defaults or defaults[key] is None:
            continue
        default = defaults[key]
        where = f"{agent_name} config {key}={value!r}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: expected true or false (e.g. --set {key}=true)")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{where}: expected a whole number like {default}")
            if key in ("batch_size", "flow_steps", "num_fisher_samples", "actor_freq") and value < 1:
                raise ConfigError(f"{where}: must be >= 1")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ConfigError(f"{where}: expected a number like {default}")
            if not np.isfinite(value):
                raise ConfigError(f"{where}: must be finite")
            if key in ("lr", "tau") and not value > 0:
                raise ConfigError(f"{where}: must be > 0")
            if key == "discount" and not 0 < value <= 1:
                raise ConfigError(f"{where}: the discount must lie in (0, 1]")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{where}: expected a string like {default!r}")
        elif isinstance(default, tuple):
            if (
                not isinstance(value, (list, tuple))
                or not value
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value)
            ):
                example = ",".join(str(v) for v in default)
                raise ConfigError(f"{where}: expected a list of positive whole numbers, e.g. --set {key}=[{example}]")
