"""What a leaderboard preset may say, and the checks that hold it to it: run settings and their types, agent
config overrides, seeds, dataset generation options and task selectors. Each check raises :class:`LeaderboardError`
naming the entry, the closest valid names and the fix.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Optional

from fidec_gym.errors import ConfigError
from fidec_gym.names import AGENT_NAMES

# Run settings a preset may set (top level, per suite or per task); they map one to one onto TrainConfig fields
# (fidec_gym.eval.run.config).
RUN_SETTINGS = {
    "offline_steps": int,
    "online_steps": int,
    "eval_interval": int,
    "eval_episodes": int,
    "eval_workers": int,
    "log_interval": int,
    "checkpoint_interval": int,
    "use_task_hyperparameters": bool,
    "divergence_table": str,
    "video_episodes": int,
    "video_frame_skip": int,
    "updates_per_dispatch": int,
}
GENERATE_KEYS = {"episodes", "seed", "workers"}


class LeaderboardError(ConfigError):
    """Bad preset, results directory or backend; the message names the problem and the fix."""


def did_you_mean(name: str, choices) -> str:
    matches = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


def preset_advice(message: str) -> str:
    """A TrainConfig/agent-config message with its command-line spelling turned into the preset's YAML spelling:
    ``offline_steps (--steps)`` -> ``offline_steps``, ``--set key=value`` -> ``key: value``."""
    message = re.sub(r" \(--[a-z-]+\)", "", message)
    return re.sub(r"--set (\w+)=", r"\1: ", message)


def agent_config_keys(agent: str) -> Optional[set]:
    """Config keys of ``agent`` (None when the agents package cannot be imported, e.g. a partial checkout)."""
    try:
        from fidec_gym.agents import get_config
    except ImportError:
        return None
    try:
        return set(get_config(agent))
    except (KeyError, ValueError, ImportError):
        return None


def expand_tasks(entries: list, where: str) -> list[str]:
    """Task IDs from IDs, ``category:<name>`` or ``suite:<name>`` selectors (numbered tasks, no default aliases)."""
    from fidec_gym.envs.catalogue import all_tasks, list_tasks, task_info

    tasks: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise LeaderboardError(f"{where}: task entries must be strings, got {entry!r}")
        if entry.startswith(("category:", "suite:")):
            kind, value = entry.split(":", 1)
            try:
                ids = list_tasks(**{kind: value.strip()})
            except ValueError as error:
                raise LeaderboardError(f"{where}: {error}") from None
            # A category means its numbered tasks; the un-suffixed alias would duplicate the default task.
            ids = [i for i in ids if not all_tasks()[i].extra.get("alias")]
        else:
            try:
                ids = [task_info(entry).env_id]
            except KeyError as error:
                raise LeaderboardError(f"{where}: {error}") from None
        tasks.extend(i for i in ids if i not in tasks)
    if not tasks:
        raise LeaderboardError(f"{where}: no tasks selected; list IDs with `fidec tasks`")
    return tasks


def check_keys(mapping: dict, valid: set, where: str) -> None:
    if not isinstance(mapping, dict):
        raise LeaderboardError(f"{where} must be a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in valid:
            raise LeaderboardError(
                f"{where}: unknown key {key!r}{did_you_mean(str(key), valid)}; valid keys: {sorted(valid)}"
            )


def check_scoped_settings(values, where: str) -> dict:
    """Run settings, ``seeds`` and ``agent_overrides`` for one suite or task, validated."""
    check_keys(values, set(RUN_SETTINGS) | {"seeds", "agent_overrides"}, where)
    clean = {}
    for key, value in values.items():
        if key == "seeds":
            clean[key] = check_seeds(value, where)
        elif key == "agent_overrides":
            check_keys(value, set(AGENT_NAMES) | {"all"}, f"{where}.agent_overrides")
            validate_overrides(value, where)
            clean[key] = value
        else:
            clean[key] = check_setting(key, value, where)
    return clean


def check_setting(key: str, value, where: str) -> Any:
    kind = RUN_SETTINGS[key]
    if value is None and key == "eval_workers":
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise LeaderboardError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if kind is int:
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())  # NaN and inf are not
        if isinstance(value, bool) or not whole or value < 0:
            raise LeaderboardError(f"{where}: {key} must be a non-negative integer, got {value!r}")
        if (
            key in ("eval_interval", "log_interval", "checkpoint_interval", "updates_per_dispatch", "video_frame_skip")
            and value < 1
        ):
            raise LeaderboardError(f"{where}: {key} must be at least 1, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise LeaderboardError(f"{where}: {key} must be a string, got {value!r}")
    return value


def check_generate(options, where: str) -> None:
    """``datasets.NAME.generate``: episodes >= 1, seed >= 0, workers >= 1 (or null), all whole numbers."""
    check_keys(options, GENERATE_KEYS, where)
    for key, minimum in (("episodes", 1), ("seed", 0), ("workers", 1)):
        if key not in options or (key == "workers" and options[key] is None):
            continue
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise LeaderboardError(f"{where}: {key} must be a whole number >= {minimum}, got {value!r}")


def check_seeds(value, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise LeaderboardError(
                f"{where}: seeds must be a positive count or a list of integers >= 0, got {value} "
                "(e.g. seeds: 3 for seeds 0, 1, 2, or seeds: [0, 1, 2])"
            )
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise LeaderboardError(f"{where}: seeds contain duplicates: {value}; list each seed once")
        negative = [s for s in value if s < 0]
        if negative:
            raise LeaderboardError(f"{where}: seeds must be >= 0, got {negative} in {value}")
        return list(value)
    raise LeaderboardError(
        f"{where}: seeds must be a positive count or a list of integers >= 0, got {value!r} "
        "(e.g. seeds: 3 for seeds 0, 1, 2, or seeds: [0, 1, 2])"
    )


def numbers_from_text(values: dict, agents) -> None:
    """YAML 1.1 reads ``3e-4`` and ``1e6`` as text; where the agent's default is a number, such text is the number
    the user meant (converted in place)."""
    from fidec_gym.agents.config import default_config

    numeric = set()
    for agent in agents:
        numeric |= {
            k for k, v in default_config(agent).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    for key, value in list(values.items()):
        if key in numeric and isinstance(value, str) and any(c.isdigit() for c in value):
            try:
                values[key] = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass  # not a number: check_overrides names the key and the expected type


def validate_overrides(overrides: dict, where: str) -> None:
    """Every override key must be a config key of the agent it names (``all``: of at least one agent), and every
    value of the type that key takes (``check_overrides``: a whole number for a batch size, a list of widths...)."""
    found = {agent: agent_config_keys(agent) for agent in AGENT_NAMES}
    if any(keys is None for keys in found.values()):
        return  # agents package not importable here; the training run validates the keys itself
    known: dict[str, set] = {agent: keys for agent, keys in found.items() if keys is not None}
    from fidec_gym.agents.config import check_overrides
    from fidec_gym.errors import FidecError

    for target, values in overrides.items():
        check_keys(
            values or {},
            set().union(*known.values()) if target == "all" else known[target],
            f"{where}: agent_overrides.{target}",
        )
        numbers_from_text(values or {}, AGENT_NAMES if target == "all" else (target,))
        for agent in AGENT_NAMES if target == "all" else (target,):
            mine = {key: value for key, value in (values or {}).items() if key in known[agent]}
            try:
                check_overrides(agent, mine)
            except FidecError as error:
                raise LeaderboardError(f"{where}: agent_overrides.{target}: {preset_advice(str(error))}") from None
