"""IMPALA convolutional encoders for pixel observations (docs/algorithms.md §3.1).

Inputs are uint8 images of shape ``(..., H, W, C)`` (frame-stacked on the channel axis); outputs are feature
vectors. ``impala_small`` is the variant used by every pixel task in the benchmark.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fidec_gym.agents.networks import MLP, default_init
from fidec_gym.errors import ConfigError


class ResidualBlock(nn.Module):
    """ReLU -> conv 3x3 -> ReLU -> conv 3x3, plus the skip connection."""

    num_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        x = nn.relu(x)
        x = nn.Conv(self.num_features, (3, 3), strides=1, padding="SAME", kernel_init=default_init())(x)
        x = nn.relu(x)
        x = nn.Conv(self.num_features, (3, 3), strides=1, padding="SAME", kernel_init=default_init())(x)
        return x + residual


class ResnetStack(nn.Module):
    """Conv 3x3, max-pool 3x3 with stride 2 (halves H and W), then ``num_blocks`` residual blocks."""

    num_features: int
    num_blocks: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.num_features, (3, 3), strides=1, padding="SAME", kernel_init=default_init())(x)
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        for _ in range(self.num_blocks):
            x = ResidualBlock(self.num_features)(x)
        return x


class ImpalaEncoder(nn.Module):
    """IMPALA ResNet encoder: three conv stacks, ReLU, flatten, then a GELU dense layer."""

    stack_sizes: Sequence[int] = (16, 32, 32)
    num_blocks: int = 2
    mlp_hidden_dims: Sequence[int] = (512,)

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        if observations.ndim < 3:
            raise ConfigError(
                f"ImpalaEncoder expects images shaped (..., H, W, C), got shape {observations.shape}; "
                "use encoder=None for state observations"
            )
        x = observations.astype(jnp.float32) / 255.0
        for num_features in self.stack_sizes:
            x = ResnetStack(num_features, self.num_blocks)(x)
        x = nn.relu(x)
        x = x.reshape((*observations.shape[:-3], -1))
        return MLP(self.mlp_hidden_dims, activate_final=True)(x)


ENCODERS = {
    "impala": functools.partial(ImpalaEncoder, num_blocks=2),
    "impala_small": functools.partial(ImpalaEncoder, num_blocks=1),
    "impala_large": functools.partial(ImpalaEncoder, stack_sizes=(64, 128, 128), mlp_hidden_dims=(1024,)),
}


def make_encoder(name: str | None) -> nn.Module | None:
    """A fresh encoder instance for ``name`` (``None`` for state observations)."""
    if name is None:
        return None
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; set config 'encoder' to one of {sorted(ENCODERS)} or None")
    return ENCODERS[name]()
