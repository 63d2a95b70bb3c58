"""Which JAX backend runs, decided by JAX: the GPU (or TPU) when one is installed and visible, else the CPU.

Nothing in fidec-gym sets ``JAX_PLATFORMS``; a user who wants the CPU on a GPU machine sets it themselves. What we do
set, for worker processes that share one accelerator, is ``XLA_PYTHON_CLIENT_PREALLOCATE=false``: by default every
JAX process grabs 75 % of the GPU's memory at start, so a second cell worker on the same GPU would fail.

Everything here answers without importing JAX (it takes seconds to import), except :func:`jax_devices`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

# Packages through which jaxlib reaches an accelerator (pip install "jax[cuda12]" / "jax[cuda13]" / "jax[tpu]").
ACCELERATOR_PLUGINS = {
    "jax_cuda12_plugin": "gpu",
    "jax_cuda13_plugin": "gpu",
    "jax_rocm60_plugin": "gpu",
    "libtpu": "tpu",
}


def installed_accelerator_plugin() -> str | None:
    """The accelerator kind whose JAX plugin is installed ("gpu", "tpu"), or None (JAX will use the CPU)."""
    requested = os.environ.get("JAX_PLATFORMS", "")
    if requested and not any(kind in requested for kind in ("cuda", "gpu", "rocm", "tpu")):
        return None  # the user asked for the CPU
    for module, kind in ACCELERATOR_PLUGINS.items():
        if importlib.util.find_spec(module) is not None:
            return kind
    return None


def gpu_visible() -> bool:
    """An NVIDIA GPU that the driver exposes (whether or not CUDA-enabled JAX is installed)."""
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")


def prepare_worker_environment(workers: int) -> None:
    """Environment for ``workers`` JAX processes about to be spawned: share an accelerator instead of each one
    preallocating most of its memory. Never touches ``JAX_PLATFORMS``."""
    if workers > 1 and installed_accelerator_plugin() is not None:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def default_workers(cpu_count: int | None = None) -> int:
    """Parallel leaderboard cells: two on the CPU (each cell uses both cores' worth of threads at times), two per
    accelerator (cells share the chip; memory is not preallocated, see :func:`prepare_worker_environment`)."""
    if installed_accelerator_plugin() is not None:
        return 2
    return max(1, min(2, cpu_count if cpu_count is not None else (os.cpu_count() or 1)))


def jax_devices() -> dict:
    """The backend JAX picked and its devices (imports JAX)."""
    import jax

    devices = jax.devices()
    return {"backend": jax.default_backend(), "devices": [str(device) for device in devices], "jax": jax.__version__}


def user_cache_dir() -> str:
    """fidec-gym's user cache: ``$XDG_CACHE_HOME/fidec-gym`` (default ``~/.cache/fidec-gym``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fidec-gym")


def default_compile_cache() -> str:
    """JAX's persistent compilation cache of fidec-gym: ``$XDG_CACHE_HOME/fidec-gym/jax-compilation``."""
    return os.path.join(user_cache_dir(), "jax-compilation")


def enable_compile_cache(path: str | None = "default") -> None:
    """Point JAX's persistent compilation cache at ``path`` ("default": :func:`default_compile_cache`), so a program
    compiled once (by any run, worker or earlier session) is loaded instead of compiled again. ``None``, or
    ``FIDEC_COMPILE_CACHE=0`` in the environment, leaves it off; a cache JAX already has is kept."""
    if not path or os.environ.get("FIDEC_COMPILE_CACHE", "1") in ("0", "off", "false"):
        return
    import jax

    # jax registers its options as attributes at import time; its Config class does not declare them.
    if jax.config.jax_compilation_cache_dir:  # type: ignore[attr-defined]
        return
    path = default_compile_cache() if path == "default" else path
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Every program, small ones too: a worker compiles dozens of 50-100 ms programs per agent and task shape, and
    # loading them is faster (the quick preset's IQL cells, warm: 41.9 s cached like this, 46.3 s above 0.5 s).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def cuda_install_hint() -> str:
    return 'pip install -e ".[cuda]"  (CUDA 12 JAX wheels; see the README\'s "GPU" section)'
