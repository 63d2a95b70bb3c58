"""Writing generated datasets: episodes concatenated into temporaries, then published next to a
``<dataset>.meta.json`` sidecar (the sidecar first, with each file's SHA-256), all or nothing, with permissions that
follow the user's umask. Shared by the manipulation generator (``envs.generate``) and the locomotion generators."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from fidec_gym.files import atomic_write_json, current_umask


def concatenate(episodes: list[dict]) -> dict[str, np.ndarray]:
    """One array per key, the episodes one after another."""
    return {key: np.concatenate([episode[key] for episode in episodes]) for key in episodes[0]}


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while finished files are moved into place, so a set of files is complete or absent."""
    blocked = hasattr(signal, "pthread_sigmask")
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def write_npz(arrays: dict[str, np.ndarray], directory: Path) -> Path:
    """A compressed npz temporary in ``directory`` (for :func:`publish`)."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".fidec-", suffix=".npz.tmp")
    with os.fdopen(handle, "wb") as f:
        np.savez_compressed(f, allow_pickle=True, **arrays)  # numpy's default, spelled out for the type checker
    return Path(name)


def write_hdf5(arrays: dict[str, np.ndarray], directory: Path, attrs: Optional[dict] = None) -> Path:
    """A D4RL-layout hdf5 file; keys with a slash (``infos/goal``) become groups. gzip-compressed."""
    import h5py

    handle, name = tempfile.mkstemp(dir=directory, prefix=".fidec-", suffix=".hdf5.tmp")
    os.close(handle)
    with h5py.File(name, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value, compression="gzip", compression_opts=4)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return Path(name)


def publish(temporaries: dict[Path, Path], sidecar: Path, info: dict) -> None:
    """Move finished temporaries into place, the sidecar first (a data file is only ever visible next to the sidecar
    that describes it); Ctrl-C is held back meanwhile so the set of files is complete or absent."""
    from fidec_gym.envs.readers import sha256_file

    try:
        info["files"] = {
            final.name: {"sha256": sha256_file(tmp), **info.get("files", {}).get(final.name, {})}
            for final, tmp in temporaries.items()
        }
        info["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with sigint_deferred():
            atomic_write_json(sidecar, info)
            for final, tmp in temporaries.items():
                os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; the data follows the user's umask
                os.replace(tmp, final)
    finally:
        for tmp in temporaries.values():
            Path(tmp).unlink(missing_ok=True)
