"""``fidec doctor``: what this installation will run on and with: versions, the JAX backend and its devices, the
rendering backend, the data directories and which of the paper's datasets are present."""

from __future__ import annotations

import os
import platform
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="versions, JAX backend and devices, data directories, datasets found")
    parser.add_argument("--no-jax", action="store_true", help="skip importing JAX (which takes a few seconds)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from importlib.metadata import PackageNotFoundError, version

    from fidec_gym import __version__
    from fidec_gym.backend import cuda_install_hint, gpu_visible, installed_accelerator_plugin, jax_devices
    from fidec_gym.envs.datasets import locate_dataset
    from fidec_gym.envs.readers import DATA_DIR_ENV

    print(f"fidec-gym {__version__}  Python {platform.python_version()} on {sys.platform} ({os.cpu_count()} CPUs)")
    for package in ("jax", "jaxlib", "flax", "optax", "gymnasium", "mujoco", "ogbench", "gymnasium-robotics", "minari"):
        try:
            print(f"  {package:<20} {version(package)}")
        except PackageNotFoundError:
            print(f"  {package:<20} not installed")
    plugin = installed_accelerator_plugin()
    print(f"accelerator plugin: {plugin or 'none (JAX runs on the CPU)'}")
    if plugin is None and gpu_visible():
        print(f"  a GPU is visible but CUDA-enabled JAX is not installed: {cuda_install_hint()}")
    if os.environ.get("JAX_PLATFORMS"):
        print(f"  JAX_PLATFORMS={os.environ['JAX_PLATFORMS']} (set in your environment)")
    if not args.no_jax:
        info = jax_devices()
        print(f"JAX {info['jax']} backend: {info['backend']}; devices: {', '.join(info['devices'])}")
    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '(unset: egl is used when there is no display)')}")
    print(
        f"data directory ${DATA_DIR_ENV}: {os.environ.get(DATA_DIR_ENV, '(unset)')}; also searched: "
        "~/.ogbench/data, ~/.d4rl/datasets, $MINARI_DATASETS_PATH"
    )
    from fidec_gym.envs.catalogue import task_info
    from fidec_gym.eval.grid.presets import load_preset

    seen: set[str] = set()
    present: list[tuple[str, str | None]] = []
    missing: list[tuple[str, str | None]] = []
    for cell in load_preset("paper-table2").cells():
        spec = task_info(cell.env_id)
        if spec.dataset in seen:
            continue
        seen.add(spec.dataset)
        found, _ = locate_dataset(spec.env_id)
        (present if found else missing).append((spec.dataset, found))
    print(f"paper datasets: {len(present)} present, {len(missing)} missing")
    for dataset, found in present:
        print(f"  present  {dataset}: {found}")
    if missing:
        print(f"  missing: {', '.join(name for name, _ in missing)}")
        print("  `fidec leaderboard plan --preset paper-table2` lists the command that gets each one")
    return 0
