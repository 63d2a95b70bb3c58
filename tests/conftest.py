"""Shared test settings: offscreen rendering, CPU JAX, and no network."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests never download: OGBench/Minari/W&B must stay offline.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Generated datasets are not kept in (or taken from) the user's cache: each test makes the data it means to.
os.environ["FIDEC_DATA_CACHE"] = "0"

import fidec_gym  # noqa: E402,F401  (registers the fidec/* IDs for every test)
