"""What the toy study runs: landscapes, critic modes, agent variants, the study's settings and its tasks.

Shared by the runner (:mod:`fidec_gym.eval.toy.study`), the claims and the figures, which import from here and never
from each other's modules in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fidec_gym.envs.catalogue import TOY_LANDSCAPES
from fidec_gym.errors import ConfigError
from fidec_gym.eval.toy.preset_metrics import PAPER_FISHER_TIMES

LANDSCAPE_KEYS = ("T1", "T2", "T3", "T4", "T5", "T6")

TOY_ENV_IDS = {key: f"fidec/{name}" for name, (key, *_) in TOY_LANDSCAPES.items()}  # the catalogue's toy IDs

CRITIC_MODES = ("learned", "oracle")

METRICS_TABLE = "toy_metrics"

PRESET_TABLE = "toy_preset_metrics"

STUDY_PRESET = "toy-study"  # the store's ``preset`` column of every run the study registers

# Settings a finished row must share with the current study to be reused on a re-run.
ROW_SETTINGS = ("steps", "hidden_dims", "batch_size", "lr", "target_divergence", "fql_alpha", "num_policy_samples")


@dataclass(frozen=True)
class Variant:
    """One trained configuration: a registered agent plus config overrides, shown under ``name``."""

    name: str
    agent: str
    overrides: tuple = ()
    sweep: bool = False  # part of the t_f / evaluation-point sweep rather than the main comparison

    @property
    def uses_critic(self) -> bool:
        return self.agent != "bc"

    @property
    def preset(self) -> str:
        return dict(self.overrides).get("preset", "")


def _fidec(name: str, sweep: bool = False, **overrides: Any) -> Variant:
    return Variant(f"fidec-{name}", "fidec", tuple(sorted(overrides.items())), sweep)


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant("bc", "bc"),
        Variant("fql", "fql"),
        Variant("deflow", "deflow"),
        _fidec("paper", preset="paper"),
        _fidec("official", preset="official"),
        _fidec("local", preset="local"),
        _fidec("isotropic", preset="isotropic"),
        *(_fidec(f"paper-t{t:g}", sweep=True, preset="paper", fisher_t=t) for t in PAPER_FISHER_TIMES if t != 0.8),
        _fidec("local-scaled", sweep=True, preset="local", local_eval_point="scaled"),
    )
}

MAIN_VARIANTS = tuple(name for name, variant in VARIANTS.items() if not variant.sweep)


@dataclass
class ToyStudyConfig:
    """What the study trains. Defaults are the full study; :meth:`quick` is the ten-minute version."""

    landscapes: tuple = LANDSCAPE_KEYS
    variants: tuple = tuple(VARIANTS)
    critics: tuple = CRITIC_MODES
    seeds: int = 3
    steps: int = 2_000
    hidden_dims: tuple = (64, 64)
    batch_size: int = 256
    lr: float = 1e-3
    target_divergence: float = 0.01
    fql_alpha: float = 10.0
    num_policy_samples: int = 10_000
    figure_samples: int = 2_000
    preset_metric_samples: int = 20_000  # behaviour samples behind each preset-metric estimate
    eval_episodes: int = 20
    updates_per_dispatch: int = 1
    workers: int = 2
    progress: bool = True

    @classmethod
    def quick(cls, **changes: Any) -> ToyStudyConfig:
        """One seed, no sweeps, 2 x 64 networks, batch 128, 600 updates: every comparison at smoke scale."""
        base = dict(seeds=1, steps=600, hidden_dims=(64, 64), batch_size=128, variants=MAIN_VARIANTS)
        return cls(**{**base, **changes})

    def validate(self) -> None:
        unknown = [key for key in self.landscapes if key not in LANDSCAPE_KEYS]
        if unknown or not self.landscapes:
            raise ConfigError(f"unknown toy landscape(s) {unknown}; choose from {list(LANDSCAPE_KEYS)}")
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown or not self.variants:
            raise ConfigError(f"unknown toy-study agent(s) {unknown}; choose from {list(VARIANTS)}")
        unknown = [mode for mode in self.critics if mode not in CRITIC_MODES]
        if unknown or not self.critics:
            raise ConfigError(f"unknown critic mode(s) {unknown}; use learned, oracle or both")
        for name in (
            "seeds",
            "steps",
            "batch_size",
            "num_policy_samples",
            "figure_samples",
            "preset_metric_samples",
            "eval_episodes",
            "updates_per_dispatch",
            "workers",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.target_divergence > 0 and self.fql_alpha > 0):
            raise ConfigError("lr, target_divergence and fql_alpha must be positive")

    def row_settings(self) -> dict:
        return {
            "steps": int(self.steps),
            "hidden_dims": "x".join(str(int(h)) for h in self.hidden_dims),
            "batch_size": int(self.batch_size),
            "lr": float(self.lr),
            "target_divergence": float(self.target_divergence),
            "fql_alpha": float(self.fql_alpha),
            "num_policy_samples": int(self.num_policy_samples),
        }


@dataclass(frozen=True)
class StudyTask:
    """One training run of the study."""

    landscape: str
    variant: str
    critic: str  # "learned", "oracle" or "none" (BC)
    seed: int

    @property
    def key(self) -> tuple:
        return (self.variant, self.landscape, int(self.seed), self.critic)


def study_tasks(config: ToyStudyConfig) -> list[StudyTask]:
    """Every (landscape, variant, critic, seed) the config asks for; BC once per landscape and seed."""
    tasks: list[StudyTask] = []
    for landscape in config.landscapes:
        for name in config.variants:
            critics = config.critics if VARIANTS[name].uses_critic else ("none",)
            for critic in critics:
                tasks.extend(StudyTask(landscape, name, critic, seed) for seed in range(config.seeds))
    return tasks


def agent_overrides(variant: Variant, config: ToyStudyConfig, critic: str) -> dict:
    """Agent config overrides of one run: the study's network and optimiser settings plus the variant's own."""
    overrides: dict[str, Any] = {
        "actor_hidden_dims": tuple(config.hidden_dims),
        "batch_size": int(config.batch_size),
        "lr": float(config.lr),
    }
    if variant.uses_critic:
        overrides.update(value_hidden_dims=tuple(config.hidden_dims), critic=critic)
    if variant.agent == "fql":
        overrides["alpha"] = float(config.fql_alpha)
    if variant.agent in ("deflow", "fidec"):
        overrides["target_divergence"] = float(config.target_divergence)
    overrides.update(dict(variant.overrides))
    return overrides


def samples_path(out_dir: Path, task: StudyTask) -> Path:
    return Path(out_dir) / "toy_samples" / f"{task.landscape}__{task.critic}__{task.variant}__seed{task.seed}.npz"
