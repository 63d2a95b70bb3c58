"""Maze geometry for the locomotion generators: free cells, BFS distances, OGBench's subgoal oracle and a Q-iteration
waypoint planner over cells (docs/datasets.md §2.3).

Both planners work on a 0/1 wall grid indexed (row, col). They are pure NumPy/Python and cached per goal cell, so a
planner query inside the control loop costs a dictionary lookup.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Optional

import numpy as np

# OGBench's neighbour order; the subgoal oracle keeps the first neighbour with the smallest distance.
NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1))


def free_cells(maze_map: np.ndarray) -> list[tuple[int, int]]:
    rows, cols = np.nonzero(np.asarray(maze_map) == 0)
    return [(int(r), int(c)) for r, c in zip(rows, cols)]


def vertex_cells(maze_map: np.ndarray) -> list[tuple[int, int]]:
    """Free cells that are not straight corridor cells (OGBench's goal cells for navigate data)."""
    m = np.asarray(maze_map)
    cells = []
    for i, j in free_cells(m):
        vertical_corridor = m[i - 1, j] == 0 and m[i + 1, j] == 0 and m[i, j - 1] == 1 and m[i, j + 1] == 1
        horizontal_corridor = m[i, j - 1] == 0 and m[i, j + 1] == 0 and m[i - 1, j] == 1 and m[i + 1, j] == 1
        if not (vertical_corridor or horizontal_corridor):
            cells.append((i, j))
    return cells


def _key(maze_map: np.ndarray) -> tuple:
    return tuple(map(tuple, np.asarray(maze_map, dtype=int).tolist()))


@lru_cache(maxsize=256)
def _bfs(maze_key: tuple, goal: tuple[int, int]) -> np.ndarray:
    m = np.asarray(maze_key)
    distance = np.full(m.shape, -1, dtype=int)
    distance[goal] = 0
    queue = deque([goal])
    while queue:
        i, j = queue.popleft()
        for di, dj in NEIGHBOURS:
            ni, nj = i + di, j + dj
            if 0 <= ni < m.shape[0] and 0 <= nj < m.shape[1] and m[ni, nj] == 0 and distance[ni, nj] == -1:
                distance[ni, nj] = distance[i, j] + 1
                queue.append((ni, nj))
    return distance


def bfs_distances(maze_map: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
    """Steps from every cell to ``goal`` through free cells (-1: wall or unreachable)."""
    return _bfs(_key(maze_map), (int(goal[0]), int(goal[1])))


def oracle_subgoal_cell(maze_map: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> tuple[int, int]:
    """OGBench's subgoal oracle: the neighbouring free cell with a strictly smaller BFS distance to the goal (the first
    in OGBench's neighbour order), or the start cell itself when none is closer (in the goal cell)."""
    m = np.asarray(maze_map)
    distance = bfs_distances(m, goal)
    start = (int(start[0]), int(start[1]))
    best = start
    for di, dj in NEIGHBOURS:
        ni, nj = start[0] + di, start[1] + dj
        if 0 <= ni < m.shape[0] and 0 <= nj < m.shape[1] and m[ni, nj] == 0 and distance[ni, nj] < distance[best]:
            best = (ni, nj)
    # The loop compares against the running best, as OGBench's does.
    return best


@lru_cache(maxsize=256)
def _q_iteration(maze_key: tuple, goal: tuple[int, int], discount: float, iterations: int) -> np.ndarray:
    """Q(s, a) over cells: reward 1 for entering the goal cell, which is absorbing (value 0); a move into a wall
    keeps the agent in place. Iterates until the values stop changing."""
    m = np.asarray(maze_key)
    cells = free_cells(m)
    value = np.zeros(m.shape)
    q = np.zeros(m.shape + (len(NEIGHBOURS),))
    for _ in range(iterations):
        new_value = value.copy()
        for i, j in cells:
            if (i, j) == goal:
                continue
            for a, (di, dj) in enumerate(NEIGHBOURS):
                ni, nj = i + di, j + dj
                if not (0 <= ni < m.shape[0] and 0 <= nj < m.shape[1]) or m[ni, nj] != 0:
                    ni, nj = i, j
                q[i, j, a] = 1.0 if (ni, nj) == goal else discount * value[ni, nj]
            new_value[i, j] = q[i, j].max()
        if np.array_equal(new_value, value):
            break
        value = new_value
    return q


def q_iteration_path(
    maze_map: np.ndarray, start: tuple[int, int], goal: tuple[int, int], discount: float = 0.99, iterations: int = 500
) -> list[tuple[int, int]]:
    """Cells from ``start`` to ``goal`` (both included) following the greedy policy of Q-value iteration over cells
    (reward 1 for entering the goal cell, discount 0.99; D4RL's and Minari's waypoint planner)."""
    m = np.asarray(maze_map)
    goal = (int(goal[0]), int(goal[1]))
    q = _q_iteration(_key(m), goal, float(discount), int(iterations))
    path = [(int(start[0]), int(start[1]))]
    while path[-1] != goal and len(path) <= m.size:
        i, j = path[-1]
        di, dj = NEIGHBOURS[int(np.argmax(q[i, j]))]
        nxt = (i + di, j + dj)
        if not (0 <= nxt[0] < m.shape[0] and 0 <= nxt[1] < m.shape[1]) or m[nxt] != 0:
            break  # unreachable goal: stay
        path.append(nxt)
    return path


class WaypointController:
    """Follow Q-iteration waypoints (cell centres) towards a goal position; the expert is steered towards the current
    waypoint. A waypoint counts as reached within ``radius`` of its centre, or when the agent is already in a later
    cell of the path; leaving the path re-plans from the agent's cell. Intermediate waypoints are jittered by
    ``-U(0, 1) * jitter`` per axis (Minari's controller); the last one is the goal position itself."""

    def __init__(self, maze_map: np.ndarray, cell_to_xy, xy_to_cell, radius: float = 0.45, jitter: float = 0.2):
        self.maze_map = np.asarray(maze_map)
        self.cell_to_xy = cell_to_xy
        self.xy_to_cell = xy_to_cell
        self.radius = float(radius)
        self.jitter = float(jitter)
        self.goal_xy: Optional[np.ndarray] = None
        self.path: list[tuple[int, int]] = []
        self.index = 0
        self.target_xy = np.zeros(2)

    def _set_target(self, rng: np.random.Generator) -> None:
        if self.index >= len(self.path) - 1:
            self.index = len(self.path) - 1
            self.target_xy = np.asarray(self.goal_xy, dtype=float)
        else:
            self.target_xy = (
                np.asarray(self.cell_to_xy(self.path[self.index]), dtype=float) - rng.uniform(size=2) * self.jitter
            )

    def _plan(self, xy: np.ndarray, rng: np.random.Generator) -> None:
        start, goal = self.xy_to_cell(xy), self.xy_to_cell(self.goal_xy)
        self.path = q_iteration_path(self.maze_map, start, goal)
        self.index = 1 if len(self.path) > 1 else 0
        self._set_target(rng)

    def target(self, xy: np.ndarray, goal_xy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The point to steer towards from ``xy`` when the goal is ``goal_xy``."""
        xy = np.asarray(xy, dtype=float)
        if self.goal_xy is None or np.linalg.norm(np.asarray(goal_xy) - self.goal_xy) > 1e-3:
            self.goal_xy = np.asarray(goal_xy, dtype=float).copy()
            self._plan(xy, rng)
            return self.target_xy
        cell = self.xy_to_cell(xy)
        if cell not in self.path:
            self._plan(xy, rng)
            return self.target_xy
        position = self.path.index(cell)
        if position >= self.index:  # overshot into the waypoint's cell or beyond: aim at the next one
            self.index = position + 1
            self._set_target(rng)
        elif self.index < len(self.path) - 1 and np.linalg.norm(self.target_xy - xy) <= self.radius:
            self.index += 1
            self._set_target(rng)
        return self.target_xy


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / (np.linalg.norm(vector) + 1e-6)


def upside_down(qpos: np.ndarray) -> bool:
    """Whether the root body (free joint quaternion w, x, y, z at qpos[3:7]) points its up axis downwards."""
    _, x, y, _ = np.asarray(qpos, dtype=float)[3:7]
    return bool(1.0 - 2.0 * (x * x + y * y) < 0.0)
