"""Locomotion data made here: goal-reaching experts trained with stable-baselines3 on OGBench's online
locomotion environments, and generators for OGBench ``navigate`` and D4RL antmaze datasets driven by them.

Modules (docs/datasets.md §2.3):

* ``online``: the online training environments (a registry: ``ant`` -> ``online-ant-xy-v0`` ...), seeded;
* ``experts``: SAC training (resumable, evaluated, with a provenance record), loading and listing experts;
* ``mazes``: maze geometry shared by both generators: free cells, BFS distances, Q-iteration over cells;
* ``navigate``: OGBench ``<maze>-navigate`` npz datasets (expert + BFS subgoal oracle);
* ``d4rl_antmaze``: D4RL ``antmaze-*-v2`` hdf5 datasets in D4RL's legacy layout (expert + waypoint controller).

Heavy imports (torch, stable-baselines3, MuJoCo) stay inside functions.
"""
