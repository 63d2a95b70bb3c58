"""The training loop: offline updates, optional online fine-tuning, evaluation, checkpoints and the reported score.

Protocol (docs/algorithms.md §3.4, §11): steps ``i = 1 .. offline_steps + online_steps``. An offline step draws
one batch from the dataset and makes one update; an online step acts once in a training environment (temperature 1),
appends the transition to a replay buffer that holds the dataset, and makes one update on a batch from it. The agent is
evaluated at step 1, every ``eval_interval`` steps, at the end of the offline phase (offline-to-online runs) and at
the last step, on separate evaluation environments. Training and validation losses are logged every
``log_interval`` steps; checkpoints are written every ``checkpoint_interval`` steps and at the end.

Resuming (``resume=True``) continues from the newest checkpoint. Offline training then reproduces the uninterrupted
run exactly (same parameters bit for bit on CPU): the agent state, the batch sampler's generator, the Python and
NumPy global generators and the evaluation history are restored, and every other random draw (evaluation seeds,
exploration noise) is derived from ``(seed, step)``. Online training continues from the checkpoint's replay buffer,
but an environment's physics state cannot be saved, so the online episode that was in progress restarts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fidec_gym.errors import ConfigError, ResultsError, ResultsPermissionError
from fidec_gym.eval.run.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_newest_readable,
    load_trainer_state,
    remove_stale_temporaries,
    save_checkpoint,
)
from fidec_gym.eval.run.config import ResolvedRun, TrainConfig, resolve_run, run_directory
from fidec_gym.eval.run.lifecycle import (
    budget_keys,
    check_same_run,
    load_run_data,
    next_boundary,
    owner,
    publish_summary,
    run_summary,
)
from fidec_gym.eval.run.loggers import CsvLogger, MetricLogger, TensorBoardLogger, WandbLogger, require_logging_packages
from fidec_gym.eval.run.online import OnlinePhase
from fidec_gym.eval.run.scoring import EVAL_METRICS
from fidec_gym.eval.store import ResultsStore, to_json
from fidec_gym.processes import interrupt_of


@dataclass
class TrainResult:
    agent: Any
    summary: dict
    run_dir: Path
    status: str


def _host_scalars(info: dict) -> dict[str, float]:
    import jax

    return {key: float(value) for key, value in jax.device_get(info).items() if np.ndim(value) == 0}


def _is_nonfinite(info: dict[str, float]) -> bool:
    if "nonfinite" in info:
        return info["nonfinite"] > 0
    return any(not math.isfinite(v) for v in info.values())


class _Trainer:
    """One run's state; :func:`train` drives it. Split out so that every piece of state is in one place."""

    def __init__(
        self,
        run: ResolvedRun,
        store: ResultsStore | None,
        run_id: int | None,
        resume: bool,
        progress: bool,
        agent_create_kwargs: dict | None,
        env_kwargs: dict | None,
    ):
        self.run_spec, self.cfg, self.spec = run, run.config, run.spec
        self.resume, self.progress = resume, progress
        self.overrides = run.agent_overrides
        self.env_kwargs = dict(env_kwargs or {})
        self.agent_create_kwargs = dict(agent_create_kwargs or {})
        self.run_id: int | None = None
        self.started = False  # set once this call has marked the run "running"
        self.last_checkpoint_step = 0
        require_logging_packages(tensorboard=self.cfg.tensorboard, wandb=self.cfg.wandb)
        # Data and agent come first: a missing dataset or bad config must not leave a half-registered run behind.
        self._load_data()
        self.agent = self._make_agent()
        # The store is opened only now, so a run that fails above leaves no empty results file behind.
        if store is None:
            store = ResultsStore(run.results_dir)
        elif store.root.expanduser().resolve() != run.results_dir:
            raise ConfigError(
                f"the store at {store.root} is not in the run's results directory {run.results_dir}; "
                "pass results_dir=store.root in the TrainConfig"
            )
        self.store = store
        self.run_id, cell = self._register_run(run_id)
        if cell:
            self.run_spec = run = dataclasses.replace(
                run,
                cell=cell,
                run_dir=run_directory(run.results_dir, self.cfg.agent, self.spec.name, self.cfg.seed, cell),
            )
        self.run_dir = run.run_dir
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ResultsPermissionError(
                f"cannot create the run directory {self.run_dir} ({error.strerror or error}); "
                "choose a writable --out directory"
            ) from None
        if not os.access(self.run_dir, os.W_OK):
            raise ResultsPermissionError(f"the run directory {self.run_dir} is not writable; choose another --out")

    # ------------------------------------------------------------------ setup
    def _register_run(self, run_id: int | None) -> tuple[int, str | None]:
        from fidec_gym.eval.run.config import code_version

        cfg = self.cfg
        self.owns_config = False  # a run registered by the caller (e.g. a leaderboard) keeps its stored config
        if run_id is not None:
            run = self.store.get_run(run_id)
            if (run["agent"], run["env_id"], int(run["seed"])) != (cfg.agent, self.spec.env_id, cfg.seed):
                raise ResultsError(
                    f"run {run_id} in the store is {run['agent']} on {run['env_id']} seed {run['seed']}, "
                    f"not {cfg.agent} on {self.spec.env_id} seed {cfg.seed}; pass the matching run_id"
                )
            return run_id, run["cell"]
        run = self.store.find_run(agent=cfg.agent, env_id=self.spec.env_id, seed=cfg.seed)
        self.owns_config = True  # found by key or new: its stored config follows this call (schedule changes allowed)
        if run is None:
            return self.store.create_run(
                agent=cfg.agent,
                env_id=self.spec.env_id,
                seed=cfg.seed,
                config=cfg.record(),
                data_provenance={},
                code_version=code_version(),
            ), None
        return run["id"], None

    def _load_data(self) -> None:
        self.data = load_run_data(self.cfg, self.spec)
        self.dataset, self.val_dataset = self.data.dataset, self.data.val_dataset
        self.sampler_kwargs, self.provenance = self.data.sampler_kwargs, self.data.provenance

    def _make_agent(self) -> Any:
        from fidec_gym.agents import AGENTS
        from fidec_gym.envs.datasets import BatchSampler

        # A throwaway sampler gives an example batch with the training layout (e.g. frame-stacked pixels) without
        # touching the training sampler's generator.
        example = BatchSampler(self.dataset, 2, seed=0, **self.sampler_kwargs).sample()
        agent_cls = AGENTS[self.cfg.agent]
        return agent_cls.create(self.cfg.seed, example, dict(self.overrides), **self.agent_create_kwargs)

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        from fidec_gym.envs.datasets import BatchSampler

        cfg, store = self.cfg, self.store
        agent = self.agent
        batch_size = int(agent.config["batch_size"])
        self.sampler = BatchSampler(self.dataset, batch_size, seed=cfg.seed, **self.sampler_kwargs)
        self.val_sampler = (
            BatchSampler(self.val_dataset, batch_size, seed=cfg.seed + 1, **self.sampler_kwargs)
            if self.val_dataset is not None
            else None
        )
        self.online = OnlinePhase(self.spec, cfg.seed, self.dataset, self.env_kwargs)
        self.evaluations: list[dict] = []
        self.last_checkpoint_step = 0
        self.elapsed = 0.0
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        start = 0

        remove_stale_temporaries(self.run_dir)  # e.g. a checkpoint being written when the process was killed
        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is not None and not self.resume:
            raise ResultsError(
                f"{self.run_dir} already holds a run (checkpoint {checkpoint.name}); resume it with "
                "--resume (resume=True), or pick another --out directory to start over"
            )
        if checkpoint is not None:
            agent, start = self._restore(agent)
        else:
            store.reset_run(self.run_id)
        # Only now (the checkpoint, if any, matched) may the stored run record change.
        config = self.cfg.record() if self.owns_config else store.get_run(self.run_id)["config"]
        store.update_config(self.run_id, config, data_provenance=self.provenance)
        store.set_status(self.run_id, "running", message=owner(), last_good_step=self.last_checkpoint_step or None)
        self.started = True
        store.delete_evaluations_after(self.run_id, start)
        self._last_log_step = start

        loggers = [CsvLogger(self.run_dir / "metrics.csv", resume_step=start if start else None)]
        if cfg.tensorboard:
            loggers.append(TensorBoardLogger(self.run_dir / "tensorboard", resume_step=start))
        if cfg.wandb:
            loggers.append(
                WandbLogger(
                    self.run_dir,
                    name=self.run_dir.name,
                    config=cfg.record(),
                    run_id=f"{self.run_dir.name}-{self.run_id}".replace("/", "-")[:120],
                )
            )
        self.logger = MetricLogger(*loggers)
        store.add_artefact(self.run_id, "metrics", str(self.run_dir / "metrics.csv"))
        self.evaluator: Any = None  # an Evaluator, made at the first evaluation
        try:
            status, agent = self._loop(agent, start)
        finally:
            self.logger.close()
            if self.evaluator is not None:
                from fidec_gym.eval.run.evaluate import release_evaluator

                release_evaluator(self.evaluator)
        return self._finish(agent, status)

    def _restore(self, agent: Any) -> tuple[Any, int]:
        """Load the newest checkpoint that reads; fall back to the one before it when the newest is damaged."""

        def load(checkpoint: Path) -> tuple[TrainerState, Any]:
            state = TrainerState.from_dict(load_trainer_state(checkpoint, TrainerState.field_names()))
            self._check_same_run(checkpoint, state)  # a different run is an error, not a damaged file
            return state, agent.load(checkpoint / "agent.msgpack", may_differ=budget_keys(state.train_config, self.cfg))

        state, restored = load_newest_readable(self.run_dir, load)
        return self._apply(state, restored), state.step

    def _check_same_run(self, checkpoint: Path, state: TrainerState) -> None:
        check_same_run(checkpoint, state.train_config, state.resolved_overrides, self.cfg, self.overrides)

    def _apply(self, state: TrainerState, agent: Any) -> Any:

        self.sampler.load_state_dict(state.sampler)
        if self.val_sampler is not None and state.val_sampler is not None:
            self.val_sampler.load_state_dict(state.val_sampler)
        random.setstate(state.python_random)
        np.random.set_state(state.numpy_global)
        self.online.restore(state.replay_rng, state.replay)
        self.evaluations = list(state.evaluations)
        self.elapsed = float(state.elapsed)
        self.last_checkpoint_step = state.step
        return agent

    def _trainer_state(self, step: int) -> TrainerState:
        return TrainerState(
            step=step,
            train_config=json.loads(to_json(self.cfg.record())),
            resolved_overrides=json.loads(to_json(self.overrides)),
            sampler=self.sampler.state_dict(),
            val_sampler=self.val_sampler.state_dict() if self.val_sampler is not None else None,
            python_random=random.getstate(),
            numpy_global=np.random.get_state(),
            replay_rng=self.online.state()[0],
            replay=self.online.state()[1],
            evaluations=list(self.evaluations),
            elapsed=self.elapsed,
        )

    def _loop(self, agent: Any, start: int) -> tuple[str, Any]:

        cfg = self.cfg
        step, total = start, cfg.total_steps
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total,
                initial=start,
                desc=f"{cfg.agent} {self.spec.name} seed {cfg.seed}",
                unit="step",
                dynamic_ncols=True,
                smoothing=0.05,
            )
        info: dict[str, float] = {}
        tick = time.perf_counter()
        try:
            while step < total:
                previous = agent
                if step < cfg.offline_steps:
                    n = min(cfg.updates_per_dispatch, next_boundary(self.cfg, step) - step)
                    if n == 1:
                        agent, raw = agent.update(self.sampler.sample())
                    else:
                        batches = [self.sampler.sample() for _ in range(n)]
                        stacked = {key: np.stack([b[key] for b in batches]) for key in batches[0]}
                        agent, raw = agent.update_n(stacked)
                else:
                    n = 1
                    online_info = self.online.act(agent, step)
                    agent, raw = agent.update(self.online.batch(int(agent.config["batch_size"])))
                    if online_info:
                        self.logger.log(step + 1, online_info)
                step += n
                info = _host_scalars(raw)
                if _is_nonfinite(info):
                    return self._fail(previous, step, info), previous
                if bar is not None:
                    bar.update(n)
                if step % cfg.log_interval == 0 or step == total:
                    now = time.perf_counter()
                    self._log(agent, step, info, now - tick)
                    tick = now
                paused = time.perf_counter()
                if (
                    step == 1
                    or step % cfg.eval_interval == 0
                    or step == total
                    or (cfg.online_steps and step == cfg.offline_steps)
                ):
                    self._evaluate(agent, step)
                    if bar is not None:
                        bar.set_postfix(score=f"{self.evaluations[-1]['normalized_score']:.1f}")
                if step % cfg.checkpoint_interval == 0 or step == total:
                    self._checkpoint(agent, step)
                # steps/s counts training only; evaluation and checkpoint time still counts in elapsed_s
                pause = time.perf_counter() - paused
                self.elapsed += pause
                tick += pause
        finally:
            if bar is not None:
                bar.close()
            self.online.close()
        return "done", agent

    # ------------------------------------------------------------------ log, evaluate, checkpoint
    def _log(self, agent, step: int, info: dict[str, float], seconds: float) -> None:
        metrics = {f"train/{key}": value for key, value in info.items()}
        if self.val_sampler is not None:
            metrics.update(_host_scalars(agent.validation_info(self.val_sampler.sample())))
        steps, self._last_log_step = step - self._last_log_step, step
        self.elapsed += seconds
        metrics["time/steps_per_second"] = steps / seconds if seconds > 0 else math.nan
        metrics["time/elapsed_s"] = self.elapsed
        self.logger.log(step, metrics)

    def _evaluate(self, agent, step: int) -> None:
        from fidec_gym.eval.run.evaluate import evaluation_layout, make_policy, open_evaluator

        cfg = self.cfg
        if self.evaluator is None:
            envs, vectorization = evaluation_layout(self.spec.env_id, cfg.eval_episodes, cfg.eval_workers)
            self.evaluator = open_evaluator(self.spec.env_id, envs, vectorization, self.env_kwargs)
        seed = cfg.seed * 1_000_003 + step  # a function of (seed, step): identical after a resume
        result = self.evaluator.run(make_policy(agent, seed), cfg.eval_episodes, seed)
        metrics = {key: result[key] for key in EVAL_METRICS}
        self.evaluations.append({"step": step, **metrics})
        self.store.add_evaluation(self.run_id, step, metrics)
        self.logger.log(step, {f"eval/{key}": value for key, value in metrics.items()})

    def _checkpoint(self, agent, step: int) -> None:
        meta = {
            "agent": self.cfg.agent,
            "env_id": self.spec.env_id,
            "seed": self.cfg.seed,
            "results_dir": str(self.run_spec.results_dir),
        }
        path = save_checkpoint(self.run_dir, step, agent, self._trainer_state(step).to_dict(), meta)
        self.last_checkpoint_step = step
        self.store.add_artefact(self.run_id, "checkpoint", str(path.parent), step=step)
        self.store.set_status(self.run_id, "running", message=owner(), last_good_step=step)

    def _fail(self, agent, step: int, info: dict[str, float]) -> str:
        bad = sorted(key for key, value in info.items() if not math.isfinite(value))
        kept = (
            f"the last good checkpoint (step {self.last_checkpoint_step}) is kept"
            if self.last_checkpoint_step
            else "no checkpoint had been written yet"
        )
        message = (
            f"non-finite loss or gradient at step {step} (non-finite: {bad or ['nonfinite']}); training "
            f"stopped and {kept}; lower the learning rate or check the data, then start again"
        )
        self.store.set_status(self.run_id, "failed", message=message, last_good_step=self.last_checkpoint_step or None)
        self.failure = message
        return "failed"

    def _finish(self, agent, status: str) -> TrainResult:
        summary = run_summary(
            self.cfg,
            self.spec,
            self.cfg.seed,
            status,
            self.evaluations,
            self.data,
            self.overrides,
            self.elapsed,
            self.env_kwargs,
        )
        if status == "failed":
            summary["message"] = self.failure
        if status == "done" and self.cfg.video_episodes > 0:
            summary["videos"] = self._record_videos(agent)
        publish_summary(self.store, self.run_id, self.run_dir, summary, self.last_checkpoint_step)
        return TrainResult(agent=agent, summary=summary, run_dir=self.run_dir, status=status)

    def _record_videos(self, agent) -> list[str]:
        from fidec_gym.eval.run.evaluate import make_policy
        from fidec_gym.eval.run.video import record_run_videos

        policy = make_policy(agent, self.cfg.seed + 1)
        return record_run_videos(
            policy, self.cfg, self.spec.env_id, self.run_dir, self.store, self.run_id, self.cfg.seed, self.env_kwargs
        )


def train(
    cfg: TrainConfig | ResolvedRun,
    store: ResultsStore | None = None,
    run_id: int | None = None,
    resume: bool = True,
    progress: bool = True,
    agent_create_kwargs: dict | None = None,
    env_kwargs: dict | None = None,
) -> TrainResult:
    """Train ``cfg.agent`` on ``cfg.env_id`` and return the final agent, the summary and the run directory.

    Args:
        cfg: the run's settings (validated and resolved here), or a run already resolved by :func:`resolve_run`.
        store: the results store of ``cfg.results_dir`` when the caller holds one open (a leaderboard worker);
            default: opened at ``cfg.results_dir`` once the data and agent are ready.
        run_id: an existing run of ``store`` to train (e.g. registered by a leaderboard); default: found by
            (agent, task, seed) or created.
        resume: continue from the newest checkpoint in the run directory when there is one. With ``False`` an
            existing checkpoint is an error (nothing is overwritten).
        progress: show a tqdm progress bar with steps/s.
        agent_create_kwargs: extra keyword arguments of the agent's ``create`` (e.g. an oracle ``q_fn``).
        env_kwargs: keyword arguments of ``gym.make`` for the evaluation and online environments.

    Returns:
        A :class:`TrainResult`; ``status`` is ``"done"`` or ``"failed"`` (a non-finite loss stops the run, keeps
        the last good checkpoint and records the failure in the store).

    The run's status in the store is written here and only here: ``running`` while it trains, ``done``, ``failed``
    (with the message) when anything goes wrong after the run is known to the store, ``pending`` when interrupted.
    """
    run = cfg if isinstance(cfg, ResolvedRun) else resolve_run(cfg)
    from fidec_gym.backend import enable_compile_cache

    enable_compile_cache()  # programs compiled by an earlier run or worker are loaded, not compiled again
    trainer = None
    try:
        trainer = _Trainer(run, store, run_id, resume, progress, agent_create_kwargs, env_kwargs)
        return trainer.run()
    except BaseException as error:
        interrupt = interrupt_of(error)
        if interrupt is None:
            _mark(trainer, store, run_id, "failed", f"{type(error).__name__}: {error}")
            raise
        _mark(
            trainer,
            store,
            run_id,
            "pending",
            "interrupted; run the same command again (with --resume for "
            "fidec train) to continue from the last checkpoint",
        )
        if interrupt is not error:
            raise interrupt from error  # an error while stopping: the caller stops as for the signal itself
        raise


def _mark(trainer: _Trainer | None, store: ResultsStore | None, run_id: int | None, status: str, message: str) -> None:
    """Record how a run ended abnormally (best effort: the original error wins). Only a run this call started, or a
    run its caller registered for it (a leaderboard cell), is marked: a refusal such as "already holds a run" leaves
    an existing run as it was."""
    if trainer is not None and trainer.started:
        store, run_id = trainer.store, trainer.run_id
    elif store is None or run_id is None or store.get_run(run_id)["status"] == "done":
        return
    try:
        last_good = trainer.last_checkpoint_step if trainer is not None else None
        store.set_status(run_id, status, message=message[:4000], last_good_step=last_good or None)
    except Exception:  # the store itself may be what failed (disk full); the caller reports the first error
        pass
