"""Every seed of one (agent, task) in one compiled program: the fast path of ``fidec train --seeds`` and leaderboards.

The agents of all seeds are stacked on a leading axis and updated with ``jax.vmap``; ``K`` updates run per dispatch
inside ``lax.scan``; each update's batch indices are drawn inside the compiled step, from a per-seed key, out of the
dataset held in device memory (no host-to-device copy per step). When the dataset does not fit in device memory, or
needs frame stacking (pixel tasks), batches are drawn on the host by one :class:`BatchSampler` per seed instead.
Metrics and the non-finite flag are pulled to the host only at log, evaluation and checkpoint steps.

Each seed keeps its own random streams (agent RNG from ``create(seed)``, sampling key from ``seed``), so seed ``s``
of a vmapped run gives the result of seed ``s`` trained alone by this path, up to floating-point reassociation.
Every seed has its own run in the store, run directory, ``metrics.csv``, ``summary.json`` and checkpoints (its slice
of the stacked agent and its own :class:`SeedState`), exactly as a one-seed run; a resume restarts all seeds from the
newest step that every seed has checkpointed. A seed whose loss turns non-finite is marked failed (its last good
checkpoint kept) while the others finish. Evaluations run all seeds together: one vector environment with ``W``
sub-environments per seed and one batched policy call per vector step; each seed keeps the episode quota it would
have alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any, Sequence

import jax
import numpy as np

from fidec_gym.errors import ConfigError, ResultsError
from fidec_gym.eval.run.checkpoint import (
    list_checkpoints,
    load_trainer_state,
    remove_stale_temporaries,
    save_checkpoint,
)
from fidec_gym.eval.run.config import ResolvedRun, TrainConfig, code_version, resolve_run
from fidec_gym.eval.run.lifecycle import (
    budget_keys,
    check_same_run,
    load_run_data,
    next_boundary,
    owner,
    publish_summary,
    run_summary,
)
from fidec_gym.eval.run.loggers import CsvLogger
from fidec_gym.eval.run.scoring import EVAL_METRICS
from fidec_gym.eval.run.trainer import TrainResult
from fidec_gym.eval.run.vmapped import (
    DEFAULT_UPDATES_PER_CALL,
    SeedState,
    _validation,
    device_updates,
    grouped_policy,
    host_updates,
)
from fidec_gym.eval.store import ResultsStore, to_json
from fidec_gym.processes import interrupt_of

DEVICE_DATA_FRACTION = 0.5  # the dataset may take at most this share of the device's free memory


# ================================================================================================ the trainer
class SeedGroupTrainer:
    """Trains the seeds of one (agent, task) together; :func:`train_seeds` drives it."""

    def __init__(
        self,
        cfg: TrainConfig,
        seeds: Sequence[int],
        store: ResultsStore | None,
        run_ids,
        resume: bool,
        progress: bool,
        updates_per_call: int,
        sampling: str,
        cell: str | None,
        env_kwargs: dict | None,
    ):
        if cfg.online_steps:
            raise ConfigError(
                "several seeds in one program train offline only; run online fine-tuning one seed at "
                "a time (fidec train --seed S --online-steps N)"
            )
        if sampling not in ("auto", "device", "host"):
            raise ConfigError(f"sampling must be 'auto', 'device' or 'host', got {sampling!r}")
        if updates_per_call < 1:
            raise ConfigError(f"updates per call must be >= 1, got {updates_per_call}")
        self.seeds = list(seeds)
        if not self.seeds:
            raise ConfigError("seeds is empty: give at least one seed (e.g. [0, 1, 2])")
        self.runs: list[ResolvedRun] = [resolve_run(dataclasses.replace(cfg, seed=s), cell=cell) for s in self.seeds]
        if len(set(self.seeds)) != len(self.seeds):  # two seeds would share one run directory
            raise ConfigError(f"seeds contain duplicates: {self.seeds}; list each seed once")
        self.cfg, self.spec, self.overrides = cfg, self.runs[0].spec, self.runs[0].agent_overrides
        self.resume, self.progress, self.updates_per_call = resume, progress, updates_per_call
        self.env_kwargs = dict(env_kwargs or {})
        self._load_data()
        self.sampling = self._choose_sampling(sampling)
        self.agents = self._make_agents()
        self.store = store if store is not None else ResultsStore(self.runs[0].results_dir)
        self.run_ids = list(run_ids) if run_ids is not None else [self._register(run) for run in self.runs]
        for run in self.runs:
            run.run_dir.mkdir(parents=True, exist_ok=True)
        self.failed: dict[int, str] = {}
        self.evaluations: list[list[dict]] = [[] for _ in self.seeds]
        self.elapsed = 0.0
        self.last_checkpoint = 0

    # ------------------------------------------------------------------ setup
    def _load_data(self) -> None:
        self.data = load_run_data(self.cfg, self.spec)
        self.dataset, self.val_dataset = self.data.dataset, self.data.val_dataset
        self.sampler_kwargs, self.provenance = self.data.sampler_kwargs, self.data.provenance

    def _choose_sampling(self, requested: str) -> str:

        if self.spec.suite == "visual":
            if requested == "device":
                raise ConfigError("pixel tasks stack frames and crop on the host; use sampling='host' (or 'auto')")
            return "host"
        if requested != "auto":
            return requested
        nbytes = sum(np.asarray(values).nbytes for values in self.dataset.values())
        stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() or {}
        limit = stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)
        if limit and nbytes > DEVICE_DATA_FRACTION * limit:
            print(
                f"the dataset ({nbytes / 1e9:.1f} GB) does not fit in device memory ({limit / 1e9:.1f} GB free); "
                "drawing batches on the host instead",
                flush=True,
            )
            return "host"
        return "device"

    def _make_agents(self) -> Any:
        from fidec_gym.agents import AGENTS
        from fidec_gym.agents.seeds import create_vmapped
        from fidec_gym.envs.datasets import BatchSampler

        example = BatchSampler(self.dataset, 2, seed=0, **self.sampler_kwargs).sample()
        agents = create_vmapped(AGENTS[self.cfg.agent], self.seeds, example, dict(self.overrides))
        self.batch_size = int(agents.config["batch_size"])
        return agents

    def _register(self, run: ResolvedRun) -> int:
        found = self.store.find_run(agent=self.cfg.agent, env_id=self.spec.env_id, seed=run.config.seed)
        if found is not None:
            return found["id"]
        return self.store.create_run(
            agent=self.cfg.agent,
            env_id=self.spec.env_id,
            seed=run.config.seed,
            config=run.config.record(),
            data_provenance={},
            code_version=code_version(),
        )

    def _streams(self) -> None:
        import jax.numpy as jnp

        from fidec_gym.envs.datasets import BatchSampler

        if self.sampling == "device":
            self.device_data = {key: jnp.asarray(value) for key, value in self.dataset.items()}
            # A stream of its own per seed, independent of the agent's RNG (which create() derives from the seed).
            self.keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 0x5A3B1E) for s in self.seeds])
        else:
            self.samplers = [
                BatchSampler(self.dataset, self.batch_size, seed=s, **self.sampler_kwargs) for s in self.seeds
            ]
        self.val_samplers = (
            [BatchSampler(self.val_dataset, self.batch_size, seed=s + 1, **self.sampler_kwargs) for s in self.seeds]
            if self.val_dataset is not None
            else None
        )

    # ------------------------------------------------------------------ checkpoints
    def _state(self, index: int, step: int) -> SeedState:
        return SeedState(
            step=step,
            seed=self.seeds[index],
            group=list(self.seeds),
            train_config=json.loads(to_json(self.runs[index].config.record())),
            resolved_overrides=json.loads(to_json(self.overrides)),
            sample_key=np.asarray(self.keys[index]).tolist() if self.sampling == "device" else None,
            sampler=self.samplers[index].state_dict() if self.sampling == "host" else None,
            val_sampler=self.val_samplers[index].state_dict() if self.val_samplers else None,
            evaluations=list(self.evaluations[index]),
            elapsed=self.elapsed,
        )

    def _checkpoint(self, step: int) -> None:
        from fidec_gym.agents.seeds import unstack_agents

        for index, agent in enumerate(unstack_agents(self.agents)):
            if self.seeds[index] in self.failed:
                continue
            run = self.runs[index]
            meta = {
                "agent": self.cfg.agent,
                "env_id": self.spec.env_id,
                "seed": self.seeds[index],
                "results_dir": str(run.results_dir),
                "group": self.seeds,
            }
            path = save_checkpoint(run.run_dir, step, agent, self._state(index, step).to_dict(), meta)
            self.store.add_artefact(self.run_ids[index], "checkpoint", str(path.parent), step=step)
            self.store.set_status(self.run_ids[index], "running", message=owner(), last_good_step=step)
        self.last_checkpoint = step

    def _restore(self) -> int:
        """Restart every seed from the newest step all of them have checkpointed; 0 when there is none."""
        import jax.numpy as jnp

        from fidec_gym.agents.seeds import unstack_agents

        steps = [{step for step, _ in list_checkpoints(run.run_dir)} for run in self.runs]
        common = set.intersection(*steps) if steps else set()
        if any(steps) and not self.resume:
            raise ResultsError(
                f"{self.runs[0].run_dir.parent} already holds these runs; resume with --resume, or "
                "pick another --out directory to start over"
            )
        if not common:
            return 0
        step = max(common)
        templates = unstack_agents(self.agents)
        restored, states = [], []
        for index, run in enumerate(self.runs):
            folder = next(path for s, path in list_checkpoints(run.run_dir) if s == step)
            state = SeedState.from_dict(load_trainer_state(folder, [f.name for f in dataclasses.fields(SeedState)]))
            check_same_run(folder, state.train_config, state.resolved_overrides, run.config, self.overrides)
            may_differ = budget_keys(state.train_config, run.config)
            restored.append(templates[index].load(folder / "agent.msgpack", may_differ=may_differ))
            states.append(state)
        self.agents = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *restored)
        for index, state in enumerate(states):
            if self.sampling == "device":
                self.keys = self.keys.at[index].set(jnp.asarray(state.sample_key, dtype=jnp.uint32))
            else:
                self.samplers[index].load_state_dict(state.sampler)
            if self.val_samplers and state.val_sampler:
                self.val_samplers[index].load_state_dict(state.val_sampler)
            self.evaluations[index] = list(state.evaluations)
        self.elapsed = max(state.elapsed for state in states)
        self.last_checkpoint = step
        return step

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[TrainResult]:
        self._streams()
        for run in self.runs:
            remove_stale_temporaries(run.run_dir)
        start = self._restore()
        for index, run_id in enumerate(self.run_ids):
            if start == 0:
                self.store.reset_run(run_id)
            self.store.update_config(run_id, self.runs[index].config.record(), data_provenance=self.provenance)
            self.store.set_status(run_id, "running", message=owner(), last_good_step=start or None)
            self.store.delete_evaluations_after(run_id, start)
            self.store.add_artefact(run_id, "metrics", str(self.runs[index].run_dir / "metrics.csv"))
        self.loggers = [CsvLogger(run.run_dir / "metrics.csv", resume_step=start or None) for run in self.runs]
        self.evaluator: Any = None  # an Evaluator, made at the first evaluation
        try:
            self._loop(start)
        finally:
            for logger in self.loggers:
                logger.close()
            if self.evaluator is not None:
                from fidec_gym.eval.run.evaluate import release_evaluator

                release_evaluator(self.evaluator)
        return [self._finish(index) for index in range(len(self.seeds))]

    def _loop(self, start: int) -> None:

        cfg, step, total = self.cfg, start, self.cfg.offline_steps
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total,
                initial=start,
                unit="step",
                dynamic_ncols=True,
                smoothing=0.05,
                desc=f"{cfg.agent} {self.spec.name} seeds {','.join(map(str, self.seeds))}",
            )
        tick = time.perf_counter()
        last_logged = start
        try:
            while step < total:
                n = min(self.updates_per_call, next_boundary(self.cfg, step) - step)
                if self.sampling == "device":
                    self.agents, self.keys, info = device_updates(
                        self.agents, self.keys, self.device_data, n, self.batch_size
                    )
                else:
                    batches = [[sampler.sample() for _ in range(n)] for sampler in self.samplers]
                    stacked = {
                        key: np.stack([np.stack([b[key] for b in seed]) for seed in batches]) for key in batches[0][0]
                    }
                    self.agents, info = host_updates(self.agents, stacked)
                step += n
                if bar is not None:
                    bar.update(n)
                logging = step % cfg.log_interval == 0 or step == total
                evaluating = step == 1 or step % cfg.eval_interval == 0 or step == total
                checkpointing = step % cfg.checkpoint_interval == 0 or step == total
                if not (logging or evaluating or checkpointing):
                    continue  # no host synchronisation between boundaries
                host = jax.device_get(info)
                self._check_finite(host, step)
                if len(self.failed) == len(self.seeds):
                    return
                paused = time.perf_counter()
                if logging:
                    seconds = paused - tick
                    self._log(host, step, step - last_logged, seconds)
                    self.elapsed += seconds
                    last_logged = step
                    tick = time.perf_counter()
                    paused = tick
                if evaluating:
                    self._evaluate(step)
                if checkpointing:
                    self._checkpoint(step)
                pause = time.perf_counter() - paused
                self.elapsed += pause
                tick += pause
        finally:
            if bar is not None:
                bar.close()

    def _check_finite(self, host: dict, step: int) -> None:
        for index, seed in enumerate(self.seeds):
            if seed in self.failed:
                continue
            values = {key: float(np.asarray(value)[index]) for key, value in host.items()}
            if values.get("nonfinite", 0) > 0 or not all(math.isfinite(v) for v in values.values()):
                kept = (
                    f"the last good checkpoint (step {self.last_checkpoint}) is kept"
                    if self.last_checkpoint
                    else "no checkpoint had been written yet"
                )
                message = (
                    f"non-finite loss or gradient by step {step}; this seed stopped and {kept}; the other "
                    "seeds go on; lower the learning rate or check the data, then start again"
                )
                self.failed[seed] = message
                self.store.set_status(
                    self.run_ids[index], "failed", message=message, last_good_step=self.last_checkpoint or None
                )

    def _log(self, host: dict, step: int, steps: int, seconds: float) -> None:

        validation = None
        if self.val_samplers:
            batches = [sampler.sample() for sampler in self.val_samplers]
            stacked = {key: np.stack([b[key] for b in batches]) for key in batches[0]}
            validation = jax.device_get(_validation(self.agents, stacked))
        for index, seed in enumerate(self.seeds):
            if seed in self.failed:
                continue
            metrics = {f"train/{key}": float(np.asarray(value)[index]) for key, value in host.items()}
            if validation is not None:
                metrics.update({key: float(np.asarray(value)[index]) for key, value in validation.items()})
            # Every seed advanced together: steps/s is the group's rate, per seed.
            metrics["time/steps_per_second"] = steps / seconds if seconds > 0 else math.nan
            metrics["time/elapsed_s"] = self.elapsed + seconds
            self.loggers[index].log(step, metrics)

    def _evaluate(self, step: int) -> None:
        from fidec_gym.eval.run.evaluate import episode_quotas, evaluation_layout, open_evaluator, summarise_episodes

        cfg, count = self.cfg, len(self.seeds)
        if self.evaluator is None:
            layout = evaluation_layout(cfg.env_id, cfg.eval_episodes, cfg.eval_workers, seeds=count)
            self.per_seed_envs, vectorization = layout
            self.evaluator = open_evaluator(cfg.env_id, count * self.per_seed_envs, vectorization, self.env_kwargs)
        width = self.per_seed_envs
        quotas = np.concatenate([episode_quotas(cfg.eval_episodes, width)] * count)
        # Seed s's sub-environments and action keys are seeded by (s, step) as a one-seed evaluation would be.
        seeds = [seed * 1_000_003 + step for seed in self.seeds]
        env_seeds = [base + w for base in seeds for w in range(width)]
        policy = grouped_policy(self.agents, seeds, width)
        result = self.evaluator.run(policy, int(quotas.sum()), env_seeds, quotas=quotas)
        by_env = np.asarray(result["episode_env_index"]) // width
        for index, seed in enumerate(self.seeds):
            if seed in self.failed:
                continue
            mine = [i for i, owner in enumerate(by_env) if owner == index]
            keys = ("env_index", "success", "normalized_score", "return", "length")
            episodes = [{key: result[f"episode_{key}"][i] for key in keys} for i in mine]
            summary = summarise_episodes(episodes)
            metrics = {key: summary[key] for key in EVAL_METRICS}
            self.evaluations[index].append({"step": step, **metrics})
            self.store.add_evaluation(self.run_ids[index], step, metrics)
            self.loggers[index].log(step, {f"eval/{key}": value for key, value in metrics.items()})

    def _finish(self, index: int) -> TrainResult:
        from fidec_gym.agents.seeds import unstack_agents

        run, seed = self.runs[index], self.seeds[index]
        status = "failed" if seed in self.failed else "done"
        summary = run_summary(
            run.config,
            self.spec,
            seed,
            status,
            self.evaluations[index],
            self.data,
            self.overrides,
            self.elapsed,
            self.env_kwargs,
        )
        summary.update(seed_group=self.seeds, sampling=self.sampling)
        if status == "failed":
            summary["message"] = self.failed[seed]
        agent = unstack_agents(self.agents)[index]
        if status == "done" and self.cfg.video_episodes > 0:
            from fidec_gym.eval.run.evaluate import make_policy
            from fidec_gym.eval.run.video import record_run_videos

            # The key chain of a one-seed run's videos (trainer.py): a seed's video does not depend on its group.
            summary["videos"] = record_run_videos(
                make_policy(agent, seed + 1),
                self.cfg,
                self.spec.env_id,
                run.run_dir,
                self.store,
                self.run_ids[index],
                seed,
                self.env_kwargs,
            )
        publish_summary(self.store, self.run_ids[index], run.run_dir, summary, self.last_checkpoint)
        return TrainResult(agent=agent, summary=summary, run_dir=run.run_dir, status=status)


def train_seeds(
    cfg: TrainConfig,
    seeds: Sequence[int],
    store: ResultsStore | None = None,
    run_ids: Sequence[int] | None = None,
    resume: bool = True,
    progress: bool = True,
    updates_per_call: int = DEFAULT_UPDATES_PER_CALL,
    sampling: str = "auto",
    cell: str | None = None,
    env_kwargs: dict | None = None,
) -> list[TrainResult]:
    """Train ``cfg`` for every seed in ``seeds`` in one compiled program (``cfg.seed`` is ignored).

    Args:
        cfg: the run settings shared by every seed (offline training only).
        seeds: the seeds; each gets its own run in the store and its own run directory.
        store: the store of ``cfg.results_dir`` when the caller holds one; default: opened there.
        run_ids: runs registered by the caller (a leaderboard cell), one per seed; default: found or created.
        resume: continue from the newest step every seed has checkpointed.
        updates_per_call: updates per compiled dispatch (``lax.scan`` length; boundaries cut it short).
        sampling: ``"device"`` (batch indices drawn inside the compiled step from the dataset in device memory),
            ``"host"`` (numpy samplers, one per seed), or ``"auto"`` (device unless it does not fit, or pixels).

    Returns:
        One :class:`TrainResult` per seed, in the order of ``seeds``.
    """
    from fidec_gym.backend import enable_compile_cache

    enable_compile_cache()
    trainer = None
    try:
        trainer = SeedGroupTrainer(
            cfg, seeds, store, run_ids, resume, progress, updates_per_call, sampling, cell, env_kwargs
        )
        return trainer.run()
    except BaseException as error:
        interrupt = interrupt_of(error)
        status = "pending" if interrupt is not None else "failed"
        message = (
            "interrupted; run the same command again to continue from the last checkpoint"
            if status == "pending"
            else f"{type(error).__name__}: {error}"
        )
        if trainer is not None:  # the runs this call trained
            marks = [
                (run_id, trainer.last_checkpoint)
                for index, run_id in enumerate(trainer.run_ids)
                if trainer.seeds[index] not in trainer.failed
            ]
            target = trainer.store
        else:  # failed before training (e.g. missing data): the runs a caller registered for it, unless finished
            marks = [(run_id, 0) for run_id in run_ids or []]
            target = store
        for run_id, last_good in marks if target is not None else []:
            try:
                if trainer is not None or target.get_run(run_id)["status"] != "done":
                    target.set_status(run_id, status, message=message[:4000], last_good_step=last_good or None)
            except Exception:  # the store may be what failed (disk full); the first error wins
                pass
        if interrupt is not None and interrupt is not error:
            raise interrupt from error  # an error while stopping: the caller stops as for the signal itself
        raise
