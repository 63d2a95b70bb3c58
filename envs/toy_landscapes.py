"""Definitions of the six 2-D toy landscapes (T1–T6) of ``docs/toy_landscapes.md``.

Each landscape pairs a behaviour distribution π_β over actions in A = [-1, 1]² with a value function Q(a): a sampler
(draws outside A are rejected, never clipped), the exact log-density, Q (evaluable with ``numpy`` or ``jax.numpy``, so
that it can act as an oracle critic inside jitted losses) and a Gaussian-mixture representation of π_β from which
:mod:`envs.toy` computes the marginals of the flow-matching path. Use them through :mod:`envs.toy`.
"""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import logsumexp

from fidec_gym.envs.catalogue import TOY_LANDSCAPES
from fidec_gym.errors import ConfigError, UnknownNameError

CHUNK_ELEMENTS = 2_000_000  # points x quadrature nodes evaluated at once (bounds memory to tens of MB)
LOG_2PI = math.log(2.0 * math.pi)


def _bump(a, center, width, xp=np):
    """g(a; c, w) = exp(-‖a - c‖² / (2 w²)), peak value 1."""
    sq = (a[..., 0] - center[0]) ** 2 + (a[..., 1] - center[1]) ** 2
    return xp.exp(-sq / (2.0 * width**2))


def as_actions(a) -> np.ndarray:
    """``a`` as a float64 array of 2-D actions (shape (..., 2)), or a ValueError that names the shape."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 2:
        raise ConfigError(f"actions must have shape (..., 2), got {arr.shape}; toy landscapes have 2-D actions")
    return arr


def _in_box(a: np.ndarray) -> np.ndarray:
    return np.all(np.abs(a) <= 1.0, axis=-1)


def blur_scale(t: float) -> float:
    """Standard deviation of the path noise in action units: x_t / t = x1 + ((1 - t)/t) x0."""
    return (1.0 - t) / max(t, 1e-6)


def _rotation(phi: float) -> np.ndarray:
    return np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])


@dataclass(frozen=True)
class GaussianMixture:
    """Weights (K,), means (K, 2) and covariances (K, 2, 2) of a bivariate Gaussian mixture."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    @functools.cached_property
    def _precisions(self) -> np.ndarray:
        return np.linalg.inv(self.covariances)

    @functools.cached_property
    def _log_normalisers(self) -> np.ndarray:
        return np.log(self.weights) - LOG_2PI - 0.5 * np.linalg.slogdet(self.covariances)[1]

    def component_log_joint(self, a, xp=np):
        """log w_k + log N(a; μ_k, Σ_k) for every component, shape (..., K)."""
        # Written out for 2 x 2 precisions: several times faster than a batched einsum and valid for jax.numpy too.
        dx = a[..., 0, None] - xp.asarray(self.means[:, 0])
        dy = a[..., 1, None] - xp.asarray(self.means[:, 1])
        p00, p01, p11 = (xp.asarray(self._precisions[:, i, j]) for i, j in ((0, 0), (0, 1), (1, 1)))
        quad = p00 * dx**2 + 2.0 * p01 * dx * dy + p11 * dy**2
        return xp.asarray(self._log_normalisers) - 0.5 * quad

    def log_density(self, a, xp=np):
        joint = self.component_log_joint(a, xp)
        peak = xp.max(joint, axis=-1, keepdims=True)  # log-sum-exp written with ops common to numpy and jax.numpy
        return peak[..., 0] + xp.log(xp.sum(xp.exp(joint - peak), axis=-1))

    def responsibilities(self, a) -> np.ndarray:
        """r_k(a) = w_k N_k(a) / π(a), shape (..., K)."""
        joint = self.component_log_joint(as_actions(a))
        return np.exp(joint - logsumexp(joint, axis=-1, keepdims=True))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        index = rng.choice(len(self.weights), size=n, p=self.weights)
        chol = np.linalg.cholesky(self.covariances)[index]  # lower triangular
        z = rng.standard_normal((n, 2))
        return self.means[index] + np.stack(
            [chol[:, 0, 0] * z[:, 0], chol[:, 1, 0] * z[:, 0] + chol[:, 1, 1] * z[:, 1]], axis=-1
        )


class Landscape(abc.ABC):
    """A behaviour distribution π_β on A = [-1, 1]² together with a value function Q(a).

    Subclasses provide a proposal sampler, the exact log-density, Q and a Gaussian-mixture representation of π_β
    (exact or by quadrature) from which the flow-matching marginals are computed.
    """

    key: str  # "T1" ... "T6"
    name: str  # short descriptive name
    components: Optional[GaussianMixture] = None  # set for the Gaussian-mixture landscapes (T1, T2, T5)

    @abc.abstractmethod
    def _propose(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """About ``n`` draws from the definition (possibly fewer, possibly outside A)."""

    @abc.abstractmethod
    def log_density(self, a) -> np.ndarray:
        """Exact log π_β(a) for actions of shape (..., 2), ignoring the < 0.1 % of mass outside A."""

    @abc.abstractmethod
    def q_value(self, a, xp: ModuleType = np):
        """Q(a) for actions of shape (..., 2); ``xp`` may be ``numpy`` or ``jax.numpy``."""

    @abc.abstractmethod
    def path_mixture(self, t: float) -> GaussianMixture:
        """π_β as a Gaussian mixture accurate at the blur scale (1 - t) / t of the flow path at time t."""

    def support_distance(self, a) -> Optional[np.ndarray]:
        """Closed-form distance from the support (M9 of docs/toy_landscapes.md §3), or None where the page defines
        none (T1, T2, T5)."""
        return None

    def sample(self, n: int, rng=None, within_box: bool = True) -> np.ndarray:
        """``n`` behaviour actions, shape (n, 2); draws outside A are rejected (never clipped) unless ``within_box``
        is False, which returns draws from the definition itself (the law that ``log_density`` describes)."""
        if n < 0:
            raise ConfigError(f"number of samples must be >= 0, got {n}")
        rng = np.random.default_rng(rng)
        parts, count = [], 0
        while count < n:
            draw = self._propose(max(int(1.1 * (n - count)), 64), rng)
            if within_box:
                draw = draw[_in_box(draw)]
            parts.append(draw)
            count += len(draw)
        return np.concatenate(parts)[:n] if parts else np.zeros((0, 2))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r}, name={self.name!r})"


class GaussianMixtureLandscape(Landscape):
    """Landscapes whose behaviour is a Gaussian mixture (T1, T2, T5): everything is closed-form."""

    components: GaussianMixture  # always set here (``None`` only on the base class)

    def __init__(self, weights, means, covariances):
        self.components = GaussianMixture(
            np.asarray(weights, float), np.asarray(means, float), np.asarray(covariances, float)
        )

    def _propose(self, n, rng):
        return self.components.sample(n, rng)

    def log_density(self, a, xp: ModuleType = np):
        return self.components.log_density(a if xp is not np else as_actions(a), xp)

    def path_mixture(self, t):
        return self.components


class BimodalLandscape(GaussianMixtureLandscape):
    """T1: a broad left mode and a narrow right mode; Q rewards moving each mode upward."""

    key, name = "T1", "bimodal"

    def __init__(self):
        super().__init__([0.5, 0.5], [[-0.45, -0.10], [0.45, -0.10]], [0.18**2 * np.eye(2), 0.05**2 * np.eye(2)])

    def q_value(self, a, xp=np):
        return 1.0 * _bump(a, (-0.45, 0.35), 0.25, xp) + 0.8 * _bump(a, (0.45, 0.15), 0.15, xp)


class SaddleLandscape(GaussianMixtureLandscape):
    """T2: a heavier favourable left mode, a lighter right mode and a value dip right of centre."""

    key, name = "T2", "saddle"

    def __init__(self):
        super().__init__(
            [0.6, 0.4], [[-0.5, 0.0], [0.5, 0.05]], [np.diag([0.06**2, 0.15**2]), np.diag([0.15**2, 0.05**2])]
        )

    def q_value(self, a, xp=np):
        return (
            1.0 * _bump(a, (-0.5, 0.3), 0.3, xp)
            + 0.75 * _bump(a, (0.55, 0.2), 0.18, xp)
            - 0.4 * _bump(a, (0.2, -0.05), 0.12, xp)
        )


class FiveLobesLandscape(GaussianMixtureLandscape):
    """T5: five radially elongated lobes, a central basin and an eccentric valley."""

    key, name = "T5", "five-lobes"
    lobe_angles = tuple(2.0 * math.pi * k / 5 + 0.3 for k in range(5))
    lobe_heights = (1.0, 0.4, 0.7, 0.2, 0.5)

    def __init__(self):
        directions = np.array([[math.cos(phi), math.sin(phi)] for phi in self.lobe_angles])
        covs = [_rotation(phi) @ np.diag([0.12**2, 0.04**2]) @ _rotation(phi).T for phi in self.lobe_angles]
        super().__init__(np.full(5, 0.2), 0.55 * directions, covs)
        self.directions = directions

    def q_value(self, a, xp=np):
        value = sum(h * _bump(a, 0.8 * u, 0.2, xp) for h, u in zip(self.lobe_heights, self.directions))
        valley_distance = (a[..., 1] - 0.5 * a[..., 0] - 0.25) / math.sqrt(1.25)
        return value - 0.8 * _bump(a, (0.0, 0.0), 0.25, xp) - 0.6 * xp.exp(-(valley_distance**2) / (2 * 0.06**2))


class ThinManifoldLandscape(Landscape):
    """T3: a thin Gaussian tube around the curve c(u) = (u, 0.45 sin 1.6u), u ∈ [-0.85, 0.85]; Q linear."""

    key, name = "T3", "thin-manifold"
    u_range = (-0.85, 0.85)
    tube_std = 0.015
    num_nodes = 4001  # trapezoid nodes; arc-length spacing <= 6e-4, far below the tube width

    def __init__(self):
        self.u_nodes = np.linspace(*self.u_range, self.num_nodes)
        self.curve_nodes = self.curve(self.u_nodes)
        weights = np.full(self.num_nodes, 1.0)
        weights[[0, -1]] = 0.5
        self.node_weights = weights / weights.sum()  # trapezoid weights of (1/1.7) ∫ du

    @staticmethod
    def curve(u) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        return np.stack([u, 0.45 * np.sin(1.6 * u)], axis=-1)

    def _propose(self, n, rng):
        u = rng.uniform(*self.u_range, size=n)
        return self.curve(u) + self.tube_std * rng.standard_normal((n, 2))

    @functools.cached_property
    def _node_tree(self) -> cKDTree:
        return cKDTree(self.curve_nodes)

    def log_density(self, a):
        a = as_actions(a)
        flat = a.reshape(-1, 2)
        out = np.empty(len(flat))
        if len(flat) == 0:
            return out.reshape(a.shape[:-1])
        if not np.all(np.isfinite(flat)):
            raise ConfigError("actions contain NaN or inf; log π_β is only defined for finite actions")
        # Terms with (a_x - u)² > d_min² + 80 s² are below e^-40 times the largest term, so each point only needs the
        # nodes within that half-width of a_x (the node's x coordinate is u itself). d_min is the exact distance to the
        # nearest node. Sorting by a_x keeps the windows of a block of points together.
        var = self.tube_std**2
        nearest, _ = self._node_tree.query(flat)
        half_width = np.sqrt(nearest**2 + 80.0 * var)
        log_w = np.log(self.node_weights)
        cx, cy = self.curve_nodes[:, 0], self.curve_nodes[:, 1]
        order = np.argsort(flat[:, 0], kind="stable")
        for start in range(0, len(flat), 256):
            idx = order[start : start + 256]
            pts = flat[idx]
            lo = max(np.searchsorted(self.u_nodes, np.min(pts[:, 0] - half_width[idx])) - 1, 0)
            hi = np.searchsorted(self.u_nodes, np.max(pts[:, 0] + half_width[idx]), side="right")
            terms = (pts[:, :1] - cx[lo:hi]) ** 2
            terms += (pts[:, 1:] - cy[lo:hi]) ** 2
            terms *= -0.5 / var
            terms += log_w[lo:hi]
            peak = terms.max(axis=1, keepdims=True)
            terms -= peak
            np.exp(terms, out=terms)  # in place: this loop dominates the cost of T3's reference statistics
            out[idx] = peak[:, 0] + np.log(terms.sum(axis=1))
        out -= math.log(2 * math.pi * var)
        return out.reshape(a.shape[:-1])

    def q_value(self, a, xp=np):
        return a[..., 0] + 0.8 * a[..., 1]

    def project(self, a) -> tuple[np.ndarray, np.ndarray]:
        """(distance to the curve, u* = argmin_u ‖a - c(u)‖) over the 4,001 curve nodes."""
        a = as_actions(a)
        distance, index = self._node_tree.query(a.reshape(-1, 2))
        return distance.reshape(a.shape[:-1]), self.u_nodes[index].reshape(a.shape[:-1])

    def support_distance(self, a):
        return self.project(a)[0]

    def path_mixture(self, t):
        # Trapezoid rule in u with arc spacing a tenth of the kernel width sqrt(s² + ((1 - t)/t)²); the Gaussian
        # kernel makes the rule converge faster than any power, so coarse nodes are exact at large blur.
        width = math.hypot(self.tube_std, blur_scale(t))
        count = int(np.clip(math.ceil(1.7 * 1.25 * 10.0 / width), 201, self.num_nodes))
        u = np.linspace(*self.u_range, count)
        weights = np.ones(count)
        weights[[0, -1]] = 0.5
        covs = np.broadcast_to(self.tube_std**2 * np.eye(2), (count, 2, 2))
        return GaussianMixture(weights / weights.sum(), self.curve(u), covs)


class ArcHotspotLandscape(Landscape):
    """T4: an arc of radius 0.65 around (0, -0.35) with a detached high-value hot-spot inside it."""

    key, name = "T4", "arc-hotspot"
    center = (0.0, -0.35)
    radius, radial_std = 0.65, 0.03
    theta_range = (0.15 * math.pi, 0.85 * math.pi)
    hotspot, hotspot_width = (0.0, -0.05), 0.12
    num_nodes = 4001  # most angular nodes of the path mixture (arc spacing 3.6e-4)

    def polar(self, a) -> tuple[np.ndarray, np.ndarray]:
        """(ρ, θ) of ``a`` around the arc centre, θ = atan2 in (-π, π]."""
        a = as_actions(a)
        dx, dy = a[..., 0] - self.center[0], a[..., 1] - self.center[1]
        return np.hypot(dx, dy), np.arctan2(dy, dx)

    def _propose(self, n, rng):
        theta = rng.uniform(*self.theta_range, size=n)
        r = rng.normal(self.radius, self.radial_std, size=n)
        return np.stack([r * np.cos(theta), r * np.sin(theta) + self.center[1]], axis=-1)

    def log_density(self, a):
        rho, theta = self.polar(a)
        lo, hi = self.theta_range
        inside = (theta >= lo) & (theta <= hi) & (rho > 0)
        with np.errstate(divide="ignore"):
            log_radial = -0.5 * ((rho - self.radius) / self.radial_std) ** 2 - 0.5 * LOG_2PI - math.log(self.radial_std)
            # 1/ρ is the polar Jacobian; θ is uniform over an interval of length 0.7π.
            value = log_radial - math.log(hi - lo) - np.log(rho)
        return np.where(inside, value, -np.inf)

    def q_value(self, a, xp=np):
        return 0.6 * a[..., 0] + 1.2 * _bump(a, self.hotspot, self.hotspot_width, xp)

    def support_distance(self, a):
        """|ρ - 0.65| within the arc's angular range, else the distance to the nearer end of the arc."""
        a = as_actions(a)
        rho, theta = self.polar(a)
        ends = [np.asarray(self.center) + self.radius * np.array([math.cos(e), math.sin(e)]) for e in self.theta_range]
        to_end = np.minimum(*(np.linalg.norm(a - end, axis=-1) for end in ends))
        lo, hi = self.theta_range
        return np.where((theta >= lo) & (theta <= hi), np.abs(rho - self.radius), to_end)

    def path_mixture(self, t):
        # Midpoint rule in θ with arc spacing a tenth of the path's blur (1 - t)/t (tangentially a node is a point).
        lo, hi = self.theta_range
        count = int(np.clip(math.ceil(self.radius * (hi - lo) * 10.0 / blur_scale(t)), 201, self.num_nodes))
        theta = lo + (np.arange(count) + 0.5) * (hi - lo) / count
        direction = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
        means = np.asarray(self.center) + self.radius * direction
        # Given θ the action is Gaussian along the radial direction only (a rank-one covariance).
        covs = self.radial_std**2 * direction[:, :, None] * direction[:, None, :]
        return GaussianMixture(np.full(count, 1.0 / count), means, covs)


def _lens_area(d: float, r: float, big_r: float) -> float:
    """Area of the intersection of two discs of radii r and R whose centres are d apart (d < r + R)."""
    return (
        r**2 * math.acos((d**2 + r**2 - big_r**2) / (2 * d * r))
        + big_r**2 * math.acos((d**2 + big_r**2 - r**2) / (2 * d * big_r))
        - 0.5 * math.sqrt((-d + r + big_r) * (d + r - big_r) * (d - r + big_r) * (d + r + big_r))
    )


class CrescentLandscape(Landscape):
    """T6: uniform on the crescent {‖a‖ <= 0.7} minus the open disc {‖a - (0.25, 0)‖ < 0.6}."""

    key, name = "T6", "crescent"
    outer_radius = 0.7
    inner_center, inner_radius = (0.25, 0.0), 0.6
    area = math.pi * 0.7**2 - _lens_area(0.25, 0.6, 0.7)
    tips = ((0.385, math.sqrt(0.7**2 - 0.385**2)), (0.385, -math.sqrt(0.7**2 - 0.385**2)))
    lure, lure_radius = (0.1, 0.0), 0.15

    def contains(self, a) -> np.ndarray:
        a = as_actions(a)
        outer = a[..., 0] ** 2 + a[..., 1] ** 2 <= self.outer_radius**2
        inner = (a[..., 0] - self.inner_center[0]) ** 2 + a[..., 1] ** 2 < self.inner_radius**2
        return outer & ~inner

    def _propose(self, n, rng):
        square = rng.uniform(-self.outer_radius, self.outer_radius, size=(n, 2))
        return square[self.contains(square)]

    def log_density(self, a):
        return np.where(self.contains(a), -math.log(self.area), -np.inf)

    def support_distance(self, a):
        """Euclidean distance to S (0 inside): the nearest point is a projection onto one of the two boundary arcs
        (when it lands on the part of that circle that bounds S) or one of the two tips."""
        a = as_actions(a)
        norm = np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        on_outer = self.outer_radius * a / norm
        offset = a - np.asarray(self.inner_center)
        on_inner = np.asarray(self.inner_center) + self.inner_radius * offset / np.maximum(
            np.linalg.norm(offset, axis=-1, keepdims=True), 1e-12
        )
        outer_valid = np.linalg.norm(on_outer - np.asarray(self.inner_center), axis=-1) >= self.inner_radius
        inner_valid = np.linalg.norm(on_inner, axis=-1) <= self.outer_radius
        candidates = [
            np.where(outer_valid, np.linalg.norm(a - on_outer, axis=-1), np.inf),
            np.where(inner_valid, np.linalg.norm(a - on_inner, axis=-1), np.inf),
            *(np.linalg.norm(a - np.asarray(tip), axis=-1) for tip in self.tips),
        ]
        return np.where(self.contains(a), 0.0, np.min(candidates, axis=0))

    def q_value(self, a, xp=np):
        return (
            0.8 * _bump(a, (0.35, 0.62), 0.2, xp)
            + 0.8 * _bump(a, (0.35, -0.62), 0.2, xp)
            + 0.6 * _bump(a, self.lure, 0.15, xp)
        )

    def path_mixture(self, t):
        # Polar quadrature around the origin, exact at the boundary: the ray at angle φ meets S on [r_in(φ), 0.7],
        # where it leaves the inner disc. Midpoint rule in φ (arc spacing a quarter of the path's blur at r = 0.7)
        # and Gauss-Legendre in r.
        blur = max(blur_scale(t), 0.005)
        phi_tip = math.atan2(self.tips[0][1], self.tips[0][0])
        span = 2.0 * (math.pi - phi_tip)
        n_phi = max(64, int(math.ceil(4.0 * self.outer_radius * span / blur)))
        phi = phi_tip + (np.arange(n_phi) + 0.5) * span / n_phi
        cx, r_inner = self.inner_center[0], self.inner_radius
        r_in = cx * np.cos(phi) + np.sqrt(r_inner**2 - (cx * np.sin(phi)) ** 2)
        width = self.outer_radius - r_in
        gl_nodes, gl_weights = np.polynomial.legendre.leggauss(int(math.ceil(3.0 * width.max() / blur)) + 4)
        r = r_in[:, None] + width[:, None] * (gl_nodes + 1.0) / 2.0
        weights = (width[:, None] / 2.0 * gl_weights) * r * (span / n_phi)  # r dr dφ
        nodes = np.stack([r * np.cos(phi)[:, None], r * np.sin(phi)[:, None]], axis=-1).reshape(-1, 2)
        covs = np.zeros((len(nodes), 2, 2))
        return GaussianMixture(weights.ravel() / weights.sum(), nodes, covs)


LANDSCAPES: dict[str, Landscape] = {
    land.key: land
    for land in (
        BimodalLandscape(),
        SaddleLandscape(),
        ThinManifoldLandscape(),
        ArcHotspotLandscape(),
        FiveLobesLandscape(),
        CrescentLandscape(),
    )
}


def get_landscape(key) -> Landscape:
    """The landscape for a key ("T1" ... "T6"), a toy task ID ("fidec/toy-bimodal-v0") or a Landscape."""
    if isinstance(key, Landscape):
        return key
    text = str(key).strip()
    if text.upper() in LANDSCAPES:
        return LANDSCAPES[text.upper()]
    name = text.split("/", 1)[-1]
    if name in TOY_LANDSCAPES:
        return LANDSCAPES[TOY_LANDSCAPES[name][0]]
    raise UnknownNameError(
        f"unknown toy landscape {key!r}; use one of {sorted(LANDSCAPES)} or a toy task ID "
        f"({', '.join('fidec/' + n for n in TOY_LANDSCAPES)})"
    )
