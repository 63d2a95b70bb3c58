"""One cell of a leaderboard: registering its runs, claiming them, training its seeds and recording how it ended.

A cell is one (agent, task) pair of a preset; :func:`run_cell` runs in a worker process (local pool or Ray).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Optional

from fidec_gym.errors import as_disk_full
from fidec_gym.eval.grid.presets import Cell, LeaderboardError, Preset, train_config
from fidec_gym.processes import add_forced_exit_hook, remove_forced_exit_hook

INTERRUPTED_MESSAGE = (
    "interrupted; run the same `fidec leaderboard run` command again to resume from the last checkpoint"
)


# ============================================================================ datasets
def prepare_datasets(preset: Preset, data_dir: Path, progress: bool = True) -> list[Path]:
    """Generate the preset's ``datasets: {NAME: {generate: ...}}`` entries into ``data_dir`` when missing:
    manipulation "play" data with OGBench's oracles, navigate data with the shipped locomotion expert.

    A dataset made earlier with the same generator, seed, episode count and (for navigate data) expert and noise
    (``fidec data generate``, found in ``$FIDEC_DATA_DIR`` or ``~/.ogbench/data``, or an earlier grid's copy in the
    user cache, :func:`generated_data_cache`) is the same data: it is linked in instead of generated again.
    """
    from fidec_gym.envs.locomotion.navigate import parse_navigate_dataset

    made = []
    for dataset, entry in preset.datasets.items():
        if "generate" not in entry or (data_dir / f"{dataset}.npz").is_file():
            continue
        options = entry["generate"] or {}
        name = dataset.removesuffix("-v0")
        if name.startswith("visual-"):
            raise LeaderboardError(f"datasets.{dataset}: generation of visual datasets is not supported by presets")
        episodes, seed, workers = int(options.get("episodes", 50)), int(options.get("seed", 0)), options.get("workers")
        navigate = parse_navigate_dataset(name) is not None
        same = _navigate_settings(name, seed, episodes) if navigate else _play_settings(seed, episodes)
        cache = generated_data_cache(dataset, same)
        if _link_identical_dataset(dataset, same, data_dir) or (
            cache is not None and _link_dataset_files(dataset, cache / f"{dataset}.npz", data_dir, same)
        ):
            made.append(data_dir / f"{dataset}.npz")
            continue
        if navigate:
            from fidec_gym.envs.locomotion.navigate import generate_navigate_dataset as generate
        else:
            from fidec_gym.envs.generate import generate_manipulation_dataset as generate
        train_path, _ = generate(name, episodes, str(data_dir), workers=int(workers or 1), seed=seed, progress=progress)
        made.append(Path(train_path))
        if cache is not None:  # for the next results directory (a hard link: no second copy on one file system)
            try:
                _link_dataset_files(dataset, Path(train_path), cache)
                print(f"{dataset}: kept in {cache} for later results directories (FIDEC_DATA_CACHE=0: not kept)")
            except OSError as error:
                print(f"{dataset}: not kept in the cache {cache} ({error})", flush=True)
    return made


def generated_data_cache(dataset: str, settings: dict) -> Optional[Path]:
    """The user-cache directory of ``dataset`` generated with ``settings``: ``$FIDEC_DATA_CACHE`` (default
    ``$XDG_CACHE_HOME/fidec-gym/datasets``) / NAME-DIGEST, the digest of the settings. ``FIDEC_DATA_CACHE=0``: none.
    A second ``fidec quickstart`` into a fresh directory then links the data instead of simulating it again."""
    import hashlib

    root = os.environ.get("FIDEC_DATA_CACHE", "")
    if root == "0":
        return None
    if not root:
        from fidec_gym.backend import user_cache_dir

        root = os.path.join(user_cache_dir(), "datasets")
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(root).expanduser() / f"{dataset}-{digest}"


def _play_settings(seed: int, episodes: int) -> dict:
    from fidec_gym.envs.generate import DEFAULT_MAX_EPISODE_STEPS

    return {
        "provenance": "generated",
        "seed": seed,
        "num_episodes": episodes,
        "max_episode_steps": DEFAULT_MAX_EPISODE_STEPS,
    }


def _navigate_settings(name: str, seed: int, episodes: int) -> dict:
    from fidec_gym.envs.locomotion.experts import resolve_expert_path
    from fidec_gym.envs.locomotion.navigate import DEFAULT_NOISE, NAVIGATE_DATASETS
    from fidec_gym.envs.readers import sha256_file

    _, expert, _, steps = NAVIGATE_DATASETS[name]
    settings = {"provenance": "generated", "seed": seed, "num_episodes": episodes, "max_episode_steps": steps}
    try:
        settings["expert"] = {"sha256": sha256_file(resolve_expert_path(None, expert))}
    except FileNotFoundError:  # no expert here: generation will say how to get one
        settings["expert"] = {"sha256": None}
    return {**settings, "noise": DEFAULT_NOISE}


def _link_identical_dataset(dataset: str, settings: dict, data_dir: Path) -> bool:
    """Link (or copy) an existing generated ``dataset`` whose sidecar matches ``settings`` (nested dicts: only the
    keys given) into ``data_dir``; False if there is none."""
    from fidec_gym.envs.readers.ogbench_npz import locate

    found, _ = locate(dataset, "train")
    return found is not None and _link_dataset_files(dataset, found, data_dir, settings)


def _link_dataset_files(dataset: str, found: Path, data_dir: Path, settings: Optional[dict] = None) -> bool:
    """Link (or copy) the train, val and sidecar files beside ``found`` into ``data_dir`` when all three exist and
    the sidecar matches ``settings`` (if given); False otherwise."""
    from fidec_gym.envs.readers.ogbench_npz import sidecar_path

    if found.parent.resolve() == data_dir.resolve():
        return False
    names = [f"{dataset}.npz", f"{dataset}-val.npz", sidecar_path(found).name]
    if not all((found.parent / name).is_file() for name in names):
        return False
    if settings is not None:
        try:
            meta = json.loads(sidecar_path(found).read_text())
        except (OSError, ValueError):
            return False
        if not _matches(meta, settings):
            return False
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in reversed(names):  # the train file last: its presence means the whole set is there
        temporary = data_dir / f".{name}.{os.getpid()}.tmp"
        temporary.unlink(missing_ok=True)
        try:
            os.link(found.parent / name, temporary)
        except OSError:  # another file system
            shutil.copyfile(found.parent / name, temporary)
        os.replace(temporary, data_dir / name)
    if settings is not None:
        print(f"{dataset}: reusing {found} (same generator settings: {_describe(settings)})", flush=True)
    return True


def _matches(meta: object, settings: dict) -> bool:
    if not isinstance(meta, dict):
        return False
    return all(
        _matches(meta.get(key), value) if isinstance(value, dict) else meta.get(key) == value
        for key, value in settings.items()
    )


def _describe(settings: dict) -> str:
    parts = [f"seed {settings['seed']}", f"{settings['num_episodes']} episodes"]
    if "expert" in settings:
        parts.append(f"expert {str(settings['expert']['sha256'])[:12]}, noise {settings['noise']}")
    return ", ".join(parts)


# ============================================================================ running one cell
def _train_config(cell: Cell, seed: int, out_dir: Path):
    return train_config(cell, seed, out_dir)


_UNSET = object()


def _differences(old, new, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two configs (nested keys joined with dots)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += _differences(old.get(key, _UNSET), new.get(key, _UNSET), f"{prefix}{key}.")
        return found
    if old == new:
        return []
    shown = ["(unset)" if value is _UNSET else repr(value) for value in (old, new)]
    return [f"{prefix[:-1]}: {shown[0]} -> {shown[1]}"]


def _check_changed_cells(store, preset: Preset, cells: list[Cell], out: Path, retry_failed: bool) -> list[tuple]:
    """Runs already in the store whose stored config differs from the preset's: the ones that may be restarted with
    the new config, as (run, new config, cell); a changed cell that may not is an error naming it and the keys."""
    from fidec_gym.eval.store import claim_alive, describe_claim, to_json

    replace, problems = [], []
    for cell in cells:
        changed = []
        for seed in cell.seeds:
            run = store.find_run(agent=cell.agent, env_id=cell.env_id, seed=seed, cell=cell.name)
            config = json.loads(to_json(_train_config(cell, seed, out).record()))
            if run is not None and run["config"] != config:
                changed.append((run, config))
        if not changed:
            continue
        keys = _differences(changed[0][0]["config"], changed[0][1])
        what = f"cell {cell.name} ({'; '.join(keys[:6])}{'; ...' if len(keys) > 6 else ''})"
        statuses = {run["status"] for run, _ in changed}
        holder = next((run for run, _ in changed if claim_alive(run)), None)
        started = any(run["last_good_step"] or store.evaluations(run["id"]) for run, _ in changed)
        if holder is None and all(_is_extension(run["config"], config) for run, config in changed):
            for run, config in changed:
                message = (
                    f"budget extended from {run['config']['offline_steps']:,} to {config['offline_steps']:,} updates"
                )
                store.extend_run(run["id"], config, message)
            continue
        if "done" in statuses:
            problems.append(
                f"{what} finished with other settings, so new results would mix with the old ones: write the "
                f"changed preset to a new directory (--out), or give it a new name (`name:` in the YAML)"
            )
        elif holder is not None:
            problems.append(f"{what} is being trained with other settings by {describe_claim(holder)}")
        elif ("failed" in statuses or started) and not retry_failed:
            state = "failed" if "failed" in statuses else "was interrupted"
            problems.append(
                f"{what} {state} with other settings: add --retry-failed to run it again with the new settings "
                "(its old results are discarded), or restore the preset's old settings"
            )
        else:
            replace += [(run, config, cell) for run, config in changed]
    if problems:
        raise LeaderboardError(
            f"preset {preset.name}: {len(problems)} cell(s) in {out} already exist with other settings:\n  "
            + "\n  ".join(problems)
        )
    return replace


def _is_extension(old: dict, new: dict) -> bool:
    """Does ``new`` only train an offline run for longer? Such a run resumes from its last checkpoint: nothing in an
    update depends on the budget, so it continues exactly as a run given the larger budget from the start would
    (evaluations and checkpoints fall on the same steps when the old budget is a multiple of both intervals)."""
    keys = {key for key in set(old) | set(new) if old.get(key) != new.get(key)}
    return (
        keys == {"offline_steps"}
        and int(new["offline_steps"]) > int(old["offline_steps"])
        and not int(new.get("online_steps") or 0)
    )


def _restart_with(store, out: Path, replace: list[tuple]) -> None:
    """Give failed (or unstarted) runs their new config: old rows and the run directory go."""
    from fidec_gym.envs.catalogue import task_info
    from fidec_gym.eval.run.config import run_directory

    for run, config, cell in replace:
        store.replace_run_config(run["id"], config)
        run_dir = run_directory(out, cell.agent, task_info(cell.env_id).name, run["seed"], cell.name)
        if run_dir.exists():
            doomed = run_dir.with_name(f".old-{run_dir.name}-{os.getpid()}")
            os.replace(run_dir, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def register_cells(
    store, preset: Preset, cells: list[Cell], out_dir: Path, retry_failed: bool = False
) -> dict[str, list[int]]:
    """Create (or find) every run of every cell in the store, status ``pending``; returns cell -> run ids.

    A run already stored with another config (the preset was edited) is restarted with the new one when it failed
    and ``retry_failed`` is set, or when it never started; otherwise nothing changes and a
    :class:`LeaderboardError` names the cells, the differing keys and the fix.
    """
    from fidec_gym.eval.run.config import code_version

    _restart_with(store, out_dir, _check_changed_cells(store, preset, cells, out_dir, retry_failed))
    version = code_version()
    run_ids = {}
    for cell in cells:
        ids = []
        for seed in cell.seeds:
            config = _train_config(cell, seed, out_dir)
            ids.append(
                store.create_run(
                    agent=cell.agent,
                    env_id=cell.env_id,
                    seed=seed,
                    config=config.record(),
                    data_provenance={},
                    code_version=version,
                    cell=cell.name,
                    preset=preset.name,
                )
            )
        run_ids[cell.name] = ids
    return run_ids


def program_group(cell: Cell) -> tuple:
    """Cells with the same group compile the same programs (agent, seed count, shapes and network settings), so a
    worker that ran one reuses its programs for the next."""
    from fidec_gym.envs.catalogue import task_info

    shapes: tuple
    try:
        spec = task_info(cell.env_id)
        shapes = (spec.observation_shape, spec.action_shape)
    except KeyError:
        shapes = (cell.env_id,)
    overrides = sorted((key, repr(value)) for key, value in cell.agent_overrides.items())
    return (cell.agent, len(cell.seeds), shapes, tuple(overrides))


class _CellClaim:
    """Hold a cell's runs for this process while it trains them (so a second grid on the same directory skips the
    cell), with a heartbeat thread for holders on other hosts. ``holder`` is set when a live process holds it."""

    def __init__(self, store, run_ids: list[int], beat_seconds: float = 15.0):
        self.store, self.run_ids, self.beat_seconds = store, list(run_ids), beat_seconds
        self.holder: Optional[dict] = None
        self._stop = threading.Event()

    def __enter__(self) -> _CellClaim:
        self.holder = self.store.claim_runs(self.run_ids)
        if self.holder is None:
            threading.Thread(target=self._beat, name="fidec-claim-heartbeat", daemon=True).start()
            add_forced_exit_hook(self._leave_resumable)
        return self

    def _leave_resumable(self) -> None:
        """The worker is being ended before its clean-up ran: its running seeds resume from their checkpoints."""
        from fidec_gym.eval.store import ResultsStore

        store = ResultsStore(self.store.root)
        for run_id in self.run_ids:
            if store.get_run(run_id)["status"] == "running":
                store.set_status(run_id, "pending", message=INTERRUPTED_MESSAGE)
        store.close()

    def _beat(self) -> None:
        from fidec_gym.eval.store import ResultsStore

        store = ResultsStore(self.store.root)  # SQLite connections stay in their thread
        while not self._stop.wait(self.beat_seconds):
            try:
                store.heartbeat(self.run_ids)
            except Exception:  # e.g. a full disk: the training thread reports it
                pass
        store.close()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.holder is None:
            remove_forced_exit_hook(self._leave_resumable)
            try:
                self.store.release_runs(self.run_ids)
            except Exception:  # a dead holder's claim is taken over anyway
                pass


def run_cell(cell: Cell, out_dir: str, run_ids: list[int], together: bool = True) -> dict:
    """Train every unfinished seed of one cell (resuming from checkpoints); never raises for a failed seed.

    With ``together`` (the default) all unfinished seeds train in one compiled program
    (:func:`fidec_gym.eval.run.multiseed.train_seeds`); offline-to-online cells, and ``together=False``, train one seed
    after another.

    Runs in a worker process (local pool or Ray). Returns {"cell", "statuses": {seed: status}, "messages"}, plus
    "held" (the claim of a live process that is training this cell; nothing was done), "already_done" (seeds found
    finished) or "disk_full" (a message; the run was marked resumable and the grid should stop).
    """
    from fidec_gym.envs.registration import register_all
    from fidec_gym.eval.run.trainer import train
    from fidec_gym.eval.store import ResultsStore

    register_all()  # a fresh worker process knows no fidec/* IDs yet

    out = Path(out_dir)
    store = ResultsStore(out)
    statuses: dict[int, str] = {}
    messages: dict[int, str] = {}
    outcome: dict = {"cell": cell.name, "statuses": statuses, "messages": messages}
    # -- claim: a second grid on the same directory must not train this cell at the same time
    with _CellClaim(store, run_ids) as claim:
        if claim.holder is not None:
            store.close()
            return {**outcome, "held": claim.holder}
        # -- the seeds
        todo = []
        for seed, run_id in zip(cell.seeds, run_ids):
            if store.get_run(run_id)["status"] == "done":
                statuses[seed] = "done"
                outcome.setdefault("already_done", []).append(seed)  # e.g. finished by another grid meanwhile
            else:
                todo.append((seed, run_id))
        if todo and together and not cell.settings.get("online_steps"):
            _train_together(cell, out, store, todo, outcome)
        for seed, run_id in todo if not (together and not cell.settings.get("online_steps")) else []:
            try:
                result = train(_train_config(cell, seed, out), store=store, run_id=run_id, resume=True, progress=False)
                status = result.status
                message = "" if status == "done" else store.get_run(run_id).get("message", "")
            except Exception as error:  # train() recorded the failure in the store; the grid goes on
                status, message = "failed", f"{type(error).__name__}: {error}"
                # -- a full disk is no failure of the cell: keep the run resumable and stop the grid
                full = as_disk_full(error, out)
                if full is not None:
                    _mark_pending(store, run_id, f"stopped: {full}")
                    statuses[seed], messages[seed] = "pending", str(full)
                    written = getattr(error, "filename", None)
                    outcome["disk_full"] = f"cell {cell.name}, seed {seed}{f', writing {written}' if written else ''}"
                    break
            statuses[seed], messages[seed] = status, message
    store.close()
    return outcome


def _train_together(cell: Cell, out: Path, store, todo: list[tuple[int, int]], outcome: dict) -> None:
    """The cell's unfinished seeds in one compiled program; fills ``outcome`` as the one-seed loop does."""
    from fidec_gym.eval.run.multiseed import train_seeds

    seeds, ids = [seed for seed, _ in todo], [run_id for _, run_id in todo]
    statuses, messages = outcome["statuses"], outcome["messages"]
    try:
        results = train_seeds(
            _train_config(cell, seeds[0], out),
            seeds,
            store=store,
            run_ids=ids,
            resume=True,
            progress=False,
            cell=cell.name,
        )
    except Exception as error:  # train_seeds recorded the failure of every seed in the store; the grid goes on
        full = as_disk_full(error, out)
        for seed, run_id in todo:
            if full is not None:
                _mark_pending(store, run_id, f"stopped: {full}")
                statuses[seed], messages[seed] = "pending", str(full)
            else:
                statuses[seed], messages[seed] = "failed", f"{type(error).__name__}: {error}"
        if full is not None:
            outcome["disk_full"] = f"cell {cell.name}, seeds {seeds}"
        return
    for (seed, run_id), result in zip(todo, results):
        statuses[seed] = result.status
        messages[seed] = "" if result.status == "done" else store.get_run(run_id).get("message", "")


def _mark_pending(store, run_id: int, message: str) -> None:
    try:
        store.set_status(run_id, "pending", message=message[:4000])
    except Exception:  # the store may be what is full; a run left "running" by a dead process resumes too
        pass


def _cell_error(cell: Cell, error: BaseException | str) -> dict:
    message = (
        f"worker crashed: {error}" if isinstance(error, str) else f"worker crashed: {type(error).__name__}: {error}"
    )
    return {
        "cell": cell.name,
        "statuses": {seed: "failed" for seed in cell.seeds},
        "messages": {seed: message for seed in cell.seeds},
    }


def _mark_failed(out: Path, run_ids: list[int], message: str) -> None:
    from fidec_gym.eval.store import ResultsStore

    store = ResultsStore(out)
    for run_id in run_ids:
        if store.get_run(run_id)["status"] != "done":
            store.set_status(run_id, "failed", message=message)
    store.close()
