"""Environments and data: OGBench and D4RL adapters, toy landscapes, wrappers, dataset readers and generators."""

import os as _os

# MuJoCo picks its GL backend at import time; offscreen EGL is the one that works without a display.
if "MUJOCO_GL" not in _os.environ and not _os.environ.get("DISPLAY"):
    _os.environ["MUJOCO_GL"] = "egl"
