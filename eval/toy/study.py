"""The toy study: do the paper's geometric claims (Figures 3 and 7) hold on the six 2-D landscapes?

Every agent is trained by the ordinary training loop (:func:`fidec_gym.eval.run.trainer.train`) on the bandit
datasets of ``fidec/toy-*``, then its own ``sample_actions`` draws 10,000 actions that
:func:`fidec_gym.eval.toy.metrics.toy_metrics` scores against the analytic behaviour density and value
(docs/toy_landscapes.md §3). Two critic modes are run: ``learned`` (the agents' normal critic fitted to the bandit
rewards) and ``oracle`` (the analytic Q passed as ``q_fn``; no critic is trained).
BC has no critic and runs once (critic ``none``).

Layout of a study directory ``DIR``::

    DIR/results.sqlite          runs, evaluations, artefacts; tables toy_metrics and toy_preset_metrics
    DIR/runs/<agent>__<task>__seed<S>__toy-<critic>-<variant>/   checkpoints, metrics.csv, summary.json
    DIR/toy_samples/*.npz       the first 2,000 policy samples of every run (for the figures)
    DIR/toy_metrics.csv         one row per (agent, landscape, seed, critic)
    DIR/toy_preset_metrics.csv  the metric each FiDec preset applies, trained flow beside the ideal one
    DIR/toy_claims.csv          the paper's claims under the acceptance rule (sign + 95 % bootstrap CI)
    DIR/figures/*.png           sample panels per landscape, the t_f sweep and the summary table

A study is resumable: a (agent, landscape, seed, critic) with a row in ``toy_metrics`` is skipped, and a run that
was interrupted mid-training continues from its last checkpoint.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fidec_gym.backend import default_compile_cache, enable_compile_cache
from fidec_gym.errors import ConfigError
from fidec_gym.eval.toy.design import (  # noqa: F401  (re-exported: the study's public names)
    CRITIC_MODES,
    LANDSCAPE_KEYS,
    MAIN_VARIANTS,
    METRICS_TABLE,
    PRESET_TABLE,
    ROW_SETTINGS,
    STUDY_PRESET,
    TOY_ENV_IDS,
    VARIANTS,
    StudyTask,
    ToyStudyConfig,
    Variant,
    agent_overrides,
    samples_path,
    study_tasks,
)
from fidec_gym.eval.toy.preset_metrics import trained_preset_metric_rows
from fidec_gym.files import atomic_path
from fidec_gym.processes import WorkerPool, interrupt_of, stop_on_signals


@functools.cache
def oracle_q_fn(landscape: str):
    """The analytic Q as a jittable ``q_fn(observations, actions) -> (B,)``.

    Cached so that every run on a landscape passes the *same* function object: ``q_fn`` is a static field of the
    agent, and a new object would make ``jax.jit`` compile the update again for every seed.
    """
    import jax.numpy as jnp

    from fidec_gym.envs.toy import get_landscape

    land = get_landscape(landscape)

    def q_fn(observations, actions):
        del observations  # one state
        return land.q_value(actions, xp=jnp)

    return q_fn


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        # allow_pickle is numpy's default, spelled out so that mypy does not match **arrays against it.
        np.savez_compressed(tmp, allow_pickle=True, **arrays)


# ================================================================================================ one run
def run_task(task: StudyTask, config: ToyStudyConfig, store) -> dict:
    """Train one task with the ordinary training loop, score 10,000 of its actions and append the metrics row."""
    import jax

    from fidec_gym.eval.run.config import TrainConfig, code_version
    from fidec_gym.eval.run.trainer import train
    from fidec_gym.eval.toy.metrics import toy_metrics

    variant = VARIANTS[task.variant]
    env_id = TOY_ENV_IDS[task.landscape]
    steps = int(config.steps)
    train_config = TrainConfig(
        agent=variant.agent,
        env_id=env_id,
        seed=int(task.seed),
        offline_steps=steps,
        eval_interval=steps,
        eval_episodes=int(config.eval_episodes),
        log_interval=max(1, steps // 4),
        checkpoint_interval=max(1, steps // 2),
        agent_overrides=agent_overrides(variant, config, task.critic),
        results_dir=str(store.root),
        updates_per_dispatch=int(config.updates_per_dispatch),
    )
    cell = f"toy-{task.critic}-{task.variant}"
    run_id = store.create_run(
        agent=variant.agent,
        env_id=env_id,
        seed=int(task.seed),
        config=train_config.record(),
        data_provenance={},
        code_version=code_version(),
        cell=cell,
        preset=STUDY_PRESET,
    )
    create_kwargs = {"q_fn": oracle_q_fn(task.landscape)} if task.critic == "oracle" else None
    result = train(
        train_config, store=store, run_id=run_id, resume=True, progress=False, agent_create_kwargs=create_kwargs
    )
    if result.status != "done":
        raise RuntimeError(
            f"{task.variant} on {task.landscape} (critic {task.critic}, seed {task.seed}) failed: "
            f"{result.summary.get('message', result.status)}"
        )
    agent = result.agent

    # The evaluation policy of each agent (temperature 0: BC's mean; flow agents always sample).
    key = jax.random.fold_in(jax.random.PRNGKey(int(task.seed)), 0x70A5)
    observations = np.zeros((int(config.num_policy_samples), 1), dtype=np.float32)
    actions = np.asarray(agent.sample_actions(observations, key, temperature=0.0), dtype=np.float64)
    path = samples_path(store.root, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save_npz(path, actions=actions[: int(config.figure_samples)].astype(np.float32))

    row: dict[str, Any] = {
        "agent": task.variant,
        "base_agent": variant.agent,
        "preset": variant.preset,
        "critic": task.critic,
        "landscape": task.landscape,
        "env_id": env_id,
        "seed": int(task.seed),
        "run_id": run_id,
        **config.row_settings(),
        "fisher_t": float(agent.config["fisher_t"]) if "fisher_t" in agent.config else None,
        "local_eval_point": agent.config.get("local_eval_point"),
    }
    row.update(_trust_region_values(agent, env_id, int(task.seed)))
    row.update({key: _plain(value) for key, value in toy_metrics(task.landscape, actions).items()})
    row["mean_action_x"], row["mean_action_y"] = (float(v) for v in actions.mean(axis=0))
    if hasattr(agent, "behaviour_actions"):
        # The agent's own BC flow, before any refinement: how well the behaviour was learnt caps every flow agent.
        base = _bc_flow_samples(agent, observations, jax.random.fold_in(key, 1))
        base_metrics = toy_metrics(task.landscape, base)
        row.update({f"bc_flow_{name}": base_metrics[name] for name in ("sf1", "mq", "dist_mean")})
    row["wall_time_s"] = float(result.summary.get("wall_time_s", math.nan))
    store.add_rows(METRICS_TABLE, [row])
    if variant.name == "fidec-paper" and int(task.seed) == 0:
        _record_preset_metrics(agent, task, store, int(config.preset_metric_samples))
    return row


def _bc_flow_samples(agent, observations: np.ndarray, key) -> np.ndarray:
    import jax

    sample = jax.jit(lambda agent, features, key: agent.behaviour_actions(features, key))
    return np.asarray(sample(agent, agent.bc_features(observations), key), dtype=np.float64)


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return value if isinstance(value, (int, float, str)) or value is None else str(value)


def _trust_region_values(agent, env_id: str, seed: int, num_batches: int = 8) -> dict:
    """The realised trust-region value D and the multiplier alpha of the final agent, on validation batches.

    Averaged over several batches of the validation split with the agent's own ``validation_info`` (the loss
    terms at the final parameters, nothing is updated). Agents without a trust region report NaN.
    """
    from fidec_gym.envs.datasets import BatchSampler, load_dataset

    if "target_divergence" not in agent.config:
        return {"final_divergence": math.nan, "final_alpha": math.nan}
    sampler = BatchSampler(load_dataset(env_id, split="val"), int(agent.config["batch_size"]), seed=seed + 17)
    infos = [agent.validation_info(sampler.sample()) for _ in range(num_batches)]
    return {
        "final_divergence": float(np.mean([float(i["val/actor/divergence"]) for i in infos])),
        "final_alpha": float(np.mean([float(i["val/actor/alpha"]) for i in infos])),
    }


def _record_preset_metrics(agent, task: StudyTask, store, num_samples: int) -> None:
    """Store the metric every FiDec preset applies on this landscape, estimated from this agent's BC flow."""
    if any(row["landscape"] == task.landscape and row["source"] == "trained" for row in store.rows(PRESET_TABLE)):
        return
    rows = trained_preset_metric_rows(agent, task.landscape, num_samples=num_samples, seed=0)
    store.add_rows(PRESET_TABLE, [{**row, "critic": task.critic, "run_id": None} for row in rows])


def _run_group(tasks: Sequence[StudyTask], config: ToyStudyConfig, out_dir: str) -> list[tuple[StudyTask, str]]:
    """Run tasks one after another in this process (they share compiled programs); returns (task, error) pairs."""
    from fidec_gym.eval.store import ResultsStore

    store = ResultsStore(out_dir)
    failures = []
    for task in tasks:
        try:
            run_task(task, config, store)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # one failed run must not stop the rest of the study
            interrupt = interrupt_of(error)
            if interrupt is not None:  # an error while stopping: stop, as for the signal itself
                raise interrupt from error
            failures.append((task, f"{type(error).__name__}: {error}"))
    return failures


def _run_group_item(item: tuple) -> list[tuple[StudyTask, str]]:
    return _run_group(*item)


def _worker_setup(compile_cache: Optional[str], single_thread: bool) -> None:
    # Worker processes: one XLA thread each (the pool provides the parallelism) and a shared on-disk cache of
    # compiled programs, so a configuration compiled by one worker (or an earlier study) is not compiled again.
    if single_thread and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    enable_compile_cache(compile_cache)


# ================================================================================================ the study
@dataclass
class StudyResult:
    out_dir: Path
    ran: int
    skipped: int
    failures: list = field(default_factory=list)
    files: dict = field(default_factory=dict)


def pending_tasks(config: ToyStudyConfig, store) -> tuple[list[StudyTask], int]:
    """Tasks without a finished row; a finished row made with other settings is an error (mixing would lie)."""
    settings = config.row_settings()
    finished = {}
    for row in store.rows(METRICS_TABLE):
        finished[(row["agent"], row["landscape"], int(row["seed"]), row["critic"])] = row
    pending, skipped = [], 0
    for task in study_tasks(config):
        row = finished.get(task.key)
        if row is None:
            pending.append(task)
            continue
        differing = {key: (row.get(key), value) for key, value in settings.items() if row.get(key) != value}
        if differing:
            details = ", ".join(f"{key}: stored {a!r}, now {b!r}" for key, (a, b) in differing.items())
            raise ConfigError(
                f"{store.root} already holds toy-study results made with other settings ({details}); "
                "re-run with the same settings to resume, or choose another --out directory"
            )
        skipped += 1
    return pending, skipped


def _groups(tasks: list[StudyTask]) -> list[list[StudyTask]]:
    """Tasks that compile the same programs go to one worker: the learned critic and BC share them across
    landscapes; the oracle's q_fn differs per landscape, so oracle groups are per landscape."""
    groups: dict[tuple, list[StudyTask]] = {}
    # Seed by seed, so that an interrupted study has every landscape of the early seeds; the main comparison
    # before the sweeps, and big groups first so that the pool's workers finish together.
    for task in sorted(tasks, key=lambda task: (task.seed, task.landscape)):
        key = (task.critic, task.variant, task.landscape if task.critic == "oracle" else "")
        groups.setdefault(key, []).append(task)
    return sorted(groups.values(), key=lambda group: (VARIANTS[group[0].variant].sweep, -len(group)))


def run_toy_study(
    config: ToyStudyConfig, out_dir: str | Path, compile_cache: Optional[str] = "default", build_outputs: bool = True
) -> StudyResult:
    """Train what is missing, then write the CSVs, figures and claims of the study in ``out_dir``.

    Args:
        config: what to train.
        out_dir: the study's results directory (created if missing).
        compile_cache: directory of JAX's persistent compilation cache (``"default"``: ~/.cache/fidec-gym/...,
            None: off).
        build_outputs: write CSVs, figures and claims after training.
    """
    from tqdm.auto import tqdm

    from fidec_gym.eval.store import ResultsStore

    config.validate()
    out = Path(out_dir).expanduser()
    store = ResultsStore(out)
    cache = default_compile_cache() if compile_cache == "default" else compile_cache
    tasks, skipped = pending_tasks(config, store)
    failures: list = []
    groups = _groups(tasks)
    workers = max(1, min(int(config.workers), len(groups)))
    bar = tqdm(
        total=len(tasks) + skipped,
        initial=skipped,
        desc="toy study",
        unit="run",
        disable=not config.progress or not tasks,
        dynamic_ncols=True,
    )
    try:
        if workers == 1:
            enable_compile_cache(cache)
            for group in groups:
                for task in group:
                    bar.set_postfix_str(f"{task.variant} {task.landscape} {task.critic} s{task.seed}")
                    failures.extend(_run_group([task], config, str(out)))
                    bar.update(1)
        else:
            # Spawned workers (JAX is not fork-safe) that stop with Ctrl-C/SIGTERM (their runs stay resumable)
            # and exit when this process dies; a worker that crashes fails its own group only.
            pool = WorkerPool(_run_group_item, workers, initializer=_worker_setup, initargs=(cache, True))
            with stop_on_signals():
                for (group, _, _), kind, value in pool.run([(group, config, str(out)) for group in groups]):
                    if kind == "ok":
                        failures.extend(value)
                    else:  # a crashed or killed worker: report its whole group
                        failures.extend((task, value[0]) for task in group)
                    bar.update(len(group))
                    bar.set_postfix_str(f"done {group[0].variant} {group[0].critic}")
    finally:
        bar.close()
    result = StudyResult(out, ran=len(tasks) - len(failures), skipped=skipped, failures=failures)
    if build_outputs:
        from fidec_gym.eval.toy.figures import write_study_outputs

        result.files = write_study_outputs(store)
    return result
