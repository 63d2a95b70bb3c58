"""D4RL antmaze-v2 and Adroit-v1 tasks rebuilt on Gymnasium-Robotics with D4RL's evaluation semantics.

The legacy ``d4rl`` package cannot be installed on a current stack (docs/datasets.md §4.1), so the simulators come from
Gymnasium-Robotics and the D4RL behaviour is restored here (every remaining difference is listed in
``docs/d4rl_differences.md``):

**Antmaze** (:class:`D4RLAntMazeEnv`). Gymnasium-Robotics' ``AntMazeEnv`` only builds the maze model; stepping,
resets, goals, rewards and termination follow D4RL's ``antmaze-*-v2`` evaluation environments:

* flat 29-d observation ``qpos[:15] + qvel[:14]`` (x, y, z, torso quaternion, 8 joint angles, then velocities);
* D4RL's evaluation maze layouts, start cell and goal cell; a new goal is drawn at every reset (v2 resets);
* sparse reward 1 within 0.5 of the goal, else 0, and the episode terminates there (return = success);
* horizons 700 (umaze) and 1000 (medium, large).

Two coordinate frames are offered because the two dataset sources disagree:

* ``frame="d4rl"`` (default): the legacy D4RL hdf5 files. D4RL places cell (row, col) at
  ``xy = 4 * (col - col_start, row - row_start)``: the start cell is the origin and y grows with the row index.
  Gymnasium-Robotics centres the map and lets y *fall* with the row index, so the maze is built from the D4RL rows
  in reverse order (a mirror image in y of Gymnasium-Robotics' convention, i.e. D4RL's own geometry) and the
  observation's xy is translated to D4RL's origin. The ant's physics is D4RL's: 0.02 s MuJoCo step (10 Hz control
  with frame skip 5), motor torque 30 x action (Gymnasium's ant: 0.01 s and 150 x action) and D4RL's contact
  impedance (solimp 0.8, 0.8, 0.01) on every geom. Resets add
  D4RL's noise: U(-0.1, 0.1) on every qpos entry and N(0, 0.1^2) on every qvel entry.
* ``frame="minari"``: Minari's regenerated ``D4RL/antmaze/*`` datasets, which were recorded in Gymnasium-Robotics'
  own frame and physics: the D4RL rows as given (Gymnasium-Robotics' ``U_MAZE``/``MEDIUM_MAZE``/``LARGE_MAZE``),
  map-centred coordinates, Gymnasium's ant, and Gymnasium-Robotics' U(-0.25, 0.25) xy noise on start and goal.

**Adroit**: ``AdroitHand{Pen,Door,Hammer,Relocate}-v1`` with D4RL's horizons (pen 100, the others 200),
``info["success"]`` from the environment's goal test, and D4RL's early termination when the pen is dropped.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from fidec_gym.envs.catalogue import TaskSpec, task_info
from fidec_gym.envs.wrappers import (
    ClipAction,
    EpisodeScore,
    Float32Observation,
    SuccessAsFloat,
    naming_unknown_keywords,
)
from fidec_gym.errors import ConfigError

# D4RL's evaluation maps for the v2 tasks (maze_env.U_MAZE_TEST, BIG_MAZE_TEST, HARDEST_MAZE_TEST), rows in
# D4RL's order: '#' wall, '.' free, 'r' start cell, 'g' evaluation goal cell.
D4RL_MAZES = {
    "umaze": ("#####", "#r..#", "###.#", "#g..#", "#####"),
    "medium": ("########", "#r.##..#", "#..#...#", "##...###", "#..#...#", "#.#..#.#", "#...#.g#", "########"),
    "large": (
        "############",
        "#r...#.....#",
        "#.##.#.#.#.#",
        "#......#...#",
        "#.####.###.#",
        "#..#.#.....#",
        "##.#.#.#.###",
        "#..#...#.g.#",
        "############",
    ),
}
# Minari's umaze data map has the start and goal cells swapped relative to D4RL's (its datasets drive from the
# bottom-left to the top-left end of the same U); medium and large keep D4RL's cells.
MINARI_UMAZE_CELLS = {"start": (3, 1), "goal": (1, 1)}

MAZE_SCALE = 4.0  # metres per cell in both D4RL and Gymnasium-Robotics
GOAL_RADIUS = 0.5  # D4RL's success radius (Gymnasium-Robotics uses 0.45)
FRAMES = ("d4rl", "minari")
# D4RL's ant model: 0.02 s step (Gymnasium: 0.01 s) and motors with ctrlrange +-30 fed 30 x action by D4RL's
# NormalizedBoxEnv; with Gymnasium's ctrlrange +-1 that is a gear of 30 (Gymnasium: 150).
D4RL_ANT_TIMESTEP = 0.02
D4RL_ANT_GEAR = 30.0
# D4RL's ant.xml gives every geom (ant, floor and maze blocks) softer contacts than MuJoCo's default solimp.
D4RL_GEOM_SOLIMP = (0.8, 0.8, 0.01, 0.5, 2.0)

ADROIT_ENV_IDS = {
    "pen": "AdroitHandPen-v1",
    "door": "AdroitHandDoor-v1",
    "hammer": "AdroitHandHammer-v1",
    "relocate": "AdroitHandRelocate-v1",
}
PEN_DROP_HEIGHT = 0.075  # D4RL ends a pen episode when the pen's centre falls below this height


def _find_cell(layout: tuple, symbol: str) -> tuple[int, int]:
    for row, line in enumerate(layout):
        col = line.find(symbol)
        if col >= 0:
            return row, col
    raise ConfigError(f"maze layout has no {symbol!r} cell")


class D4RLAntMazeEnv(gym.Env):
    """A D4RL antmaze evaluation environment (see the module docstring for the semantics and frames).

    Args:
        maze: ``"umaze"``, ``"medium"`` or ``"large"``.
        frame: ``"d4rl"`` (legacy D4RL hdf5 data) or ``"minari"`` (Minari's regenerated data).
        render_mode: None or ``"rgb_array"``.
        width, height: render size.

    ``reset(options={"start_xy": ..., "goal_xy": ...})`` overrides the sampled start and goal (observation frame).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        maze: str = "umaze",
        frame: str = "d4rl",
        render_mode: Optional[str] = None,
        width: int = 480,
        height: int = 480,
    ):
        if maze not in D4RL_MAZES:
            raise ConfigError(f"unknown maze {maze!r}; valid: {sorted(D4RL_MAZES)}")
        if frame not in FRAMES:
            raise ConfigError(f"unknown frame {frame!r}; valid: {FRAMES} (d4rl: legacy hdf5 data, minari: Minari data)")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        from gymnasium_robotics.envs.maze.ant_maze_v4 import AntMazeEnv  # heavy: only when an env is made

        self.maze_name = maze
        self.frame = frame
        self.render_mode = render_mode
        layout = D4RL_MAZES[maze]
        self._start_cell = _find_cell(layout, "r")
        self._goal_cell = _find_cell(layout, "g")
        if frame == "d4rl":
            # Reverse the rows so that Gymnasium-Robotics' "y falls with the row" places D4RL row r at y ~ +4 r.
            built_rows = layout[::-1]
        else:
            built_rows = layout
            if maze == "umaze":
                self._start_cell, self._goal_cell = MINARI_UMAZE_CELLS["start"], MINARI_UMAZE_CELLS["goal"]
        maze_map = [[1 if symbol == "#" else 0 for symbol in line] for line in built_rows]
        self._maze_env = AntMazeEnv(
            maze_map=maze_map,
            render_mode=render_mode,
            continuing_task=False,
            reset_target=False,
            width=width,
            height=height,
        )
        self._ant = self._maze_env.ant_env
        self._maze = self._maze_env.maze
        # Gymnasium-Robotics writes the generated maze model into the system temp directory and never removes it;
        # the model is loaded by now, so delete the file rather than leave one behind per environment.
        model_file = Path(self._ant.fullpath)
        if model_file.name.startswith("ant_maze") and model_file.parent == Path(tempfile.gettempdir()):
            model_file.unlink(missing_ok=True)
        self._num_rows = len(layout)

        if frame == "d4rl":
            self._ant.model.opt.timestep = D4RL_ANT_TIMESTEP
            self._ant.model.actuator_gear[:, 0] = D4RL_ANT_GEAR
            self._ant.model.geom_solimp[:] = D4RL_GEOM_SOLIMP
            # Observation xy = world xy + offset puts D4RL's start cell at the origin.
            self._xy_offset = -self._world_xy_of_cell(self._start_cell)
        else:
            self._xy_offset = np.zeros(2)

        self.action_space = spaces.Box(-1.0, 1.0, shape=(self._ant.model.nu,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(29,), dtype=np.float64)
        self.goal_xy = np.zeros(2)

    # -- geometry -------------------------------------------------------------------------------------------------
    def _world_xy_of_cell(self, cell: tuple[int, int]) -> np.ndarray:
        """Simulator xy of the centre of a cell given in this frame's layout (D4RL rows for frame='d4rl')."""
        row, col = cell
        built_row = self._num_rows - 1 - row if self.frame == "d4rl" else row
        return np.asarray(self._maze.cell_rowcol_to_xy(np.array([built_row, col])), dtype=np.float64)

    def cell_xy(self, cell: tuple[int, int]) -> np.ndarray:
        """Observation-frame xy of a cell's centre (D4RL: ``4 * (col - col_start, row - row_start)``)."""
        return self._world_xy_of_cell(cell) + self._xy_offset

    @property
    def agent_xy(self) -> np.ndarray:
        """The ant's torso xy in the observation frame."""
        return self._ant.data.qpos[:2] + self._xy_offset

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Set the ant's state from observation-frame ``qpos`` (15) and ``qvel`` (14), e.g. a dataset's infos."""
        qpos = np.array(qpos, dtype=np.float64)
        qpos[:2] -= self._xy_offset
        self._ant.set_state(qpos, np.asarray(qvel, dtype=np.float64))

    def _observation(self) -> np.ndarray:
        qpos = self._ant.data.qpos[:15].copy()
        qpos[:2] += self._xy_offset
        return np.concatenate([qpos, self._ant.data.qvel[:14]])

    def _sample_goal(self) -> np.ndarray:
        centre = self.cell_xy(self._goal_cell)
        if self.frame == "d4rl":
            # D4RL's goal sampler: U(0, 1) cell noise plus U(0, 0.5), both non-negative, then clipped at 0.
            noise = (
                self.np_random.uniform(0.0, 0.25 * MAZE_SCALE, 2)
                + self.np_random.uniform(0.0, 0.5, 2) * 0.25 * MAZE_SCALE
            )
            return np.maximum(centre + noise, 0.0)
        return centre + self.np_random.uniform(-0.25, 0.25, 2)

    # -- Gymnasium API --------------------------------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        options = options or {}
        self.goal_xy = np.asarray(options.get("goal_xy", self._sample_goal()), dtype=np.float64)
        self._ant.reset()  # mj_resetData; Gymnasium-Robotics builds the ant with zero reset noise
        qpos = self._ant.init_qpos.copy()
        qvel = self._ant.init_qvel.copy()
        start_world = self._world_xy_of_cell(self._start_cell)
        if self.frame == "d4rl":
            qpos = qpos + self.np_random.uniform(-0.1, 0.1, qpos.shape)
            qvel = qvel + 0.1 * self.np_random.standard_normal(qvel.shape)
            qpos[:2] += start_world
        else:
            qpos[:2] = start_world + self.np_random.uniform(-0.25, 0.25, 2)
        if "start_xy" in options:
            qpos[:2] = np.asarray(options["start_xy"], dtype=np.float64) - self._xy_offset
        self._ant.set_state(qpos, qvel)
        # Move the rendered target marker to the goal.
        self._maze_env.goal = self.goal_xy - self._xy_offset
        self._maze_env.update_target_site_pos()
        return self._observation(), {"success": float(self._at_goal()), "goal": self.goal_xy.copy()}

    def _at_goal(self) -> bool:
        return bool(np.linalg.norm(self.agent_xy - self.goal_xy) <= GOAL_RADIUS)

    def step(self, action):
        self._ant.do_simulation(np.asarray(action, dtype=np.float64), self._ant.frame_skip)
        success = self._at_goal()  # after the action, as in D4RL
        info = {"success": float(success), "goal": self.goal_xy.copy()}
        return self._observation(), float(success), success, False, info

    def render(self):
        return self._maze_env.render()

    def close(self):
        self._maze_env.close()
        super().close()


class PenDropTermination(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """End a pen episode when the pen falls (its centre below 0.075 m), as D4RL's pen environments do."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        pen = self.env.unwrapped
        dropped = bool(pen.data.xpos[pen.obj_body_id][2] < PEN_DROP_HEIGHT)
        return observation, reward, terminated or dropped, truncated, info


def _antmaze_name(spec: TaskSpec) -> str:
    return spec.name.split("-")[1]  # antmaze-<maze>[-<kind>]-v2


def make_d4rl_env(
    task: str,
    render_mode: Optional[str] = None,
    frame: str = "d4rl",
    pen_drop_termination: bool = True,
    horizon: Optional[int] = None,
    **kwargs,
) -> gym.Env:
    """Make the D4RL task ``task`` (e.g. ``"antmaze-large-diverse-v2"``, ``"pen-cloned-v1"``).

    Args:
        task: catalogue name, with or without ``fidec/``.
        render_mode: None or ``"rgb_array"``.
        frame: antmaze only: ``"d4rl"`` for legacy D4RL hdf5 data, ``"minari"`` for Minari's datasets.
        pen_drop_termination: pen only: end the episode when the pen is dropped (D4RL's behaviour).
        horizon: episode length; None keeps D4RL's (pass this rather than ``gym.make(..., max_episode_steps=)``,
            whose time limit sits outside the episode statistics).
        **kwargs: passed to the simulator (antmaze: ``width``, ``height``; Adroit: Gymnasium-Robotics' options).
    """
    spec = task_info(task)
    if spec.suite != "d4rl":
        raise ConfigError(f"{spec.env_id} is a {spec.suite!r} task, not a D4RL one; make it with gym.make(...)")
    horizon = spec.horizon if horizon is None else int(horizon)
    if horizon < 1:
        raise ConfigError(f"horizon must be a positive number of steps, got {horizon}")
    if spec.category == "d4rl-antmaze":
        with naming_unknown_keywords(spec.env_id, kwargs):
            env: gym.Env = D4RLAntMazeEnv(maze=_antmaze_name(spec), frame=frame, render_mode=render_mode, **kwargs)
        env = TimeLimit(env, max_episode_steps=horizon)
        metadata = {"frame": frame, "goal_radius": GOAL_RADIUS}
    else:
        hand = spec.name.split("-")[0]
        import gymnasium_robotics  # noqa: F401  (registers AdroitHand*-v1)

        gym.register_envs(gymnasium_robotics)
        with naming_unknown_keywords(spec.env_id, kwargs):
            env = gym.make(
                ADROIT_ENV_IDS[hand],
                max_episode_steps=horizon,
                render_mode=render_mode,
                disable_env_checker=True,
                **kwargs,
            )
        env = SuccessAsFloat(env)
        if hand == "pen" and pen_drop_termination:
            env = PenDropTermination(env)
        metadata = {"pen_drop_termination": bool(hand == "pen" and pen_drop_termination)}
    env = ClipAction(env)
    env = Float32Observation(env)
    return EpisodeScore(env, spec, metadata={"suite": "d4rl", "horizon": horizon, **metadata})
