"""The curriculum: which training rows each epoch draws, and how the draw moves (METHOD.md section 3).

GAIN-RL orders the N rows once (by score, by another score-file column, or at random) and,
each epoch, draws B positions of that ordering without replacement with weights
w_k ~ exp(-(k - mu)^2 / (2 sigma^2)); after the epoch, accuracy and the angle signal move mu.
The uniform baseline (vanilla GRPO) draws a fresh random subset of B rows every epoch.

Everything here is numbers in, numbers out, except `build_sampler` (reads a SamplerConfig)
and `draw_on_rank0_and_broadcast` (the one collective), both at the end of the module.
Randomness: the draws and the random ordering come from two independent numpy streams of
one int seed, so a `random` ordering is not correlated with the noise of the draws.
"""
from __future__ import annotations

import copy
import hashlib
import math
import warnings
from typing import Optional

import numpy as np

from .dist import broadcast_from_rank0, is_rank0

ORDER_STREAM, DRAW_STREAM = 0, 1


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    """An independent numpy Generator per (seed, stream)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


# ---- the ordering: position 0 is walked first ------------------------------------------------

def random_ordering(num_rows: int, seed: int) -> np.ndarray:
    """A seeded random permutation of the row indices (isolates the Gaussian schedule itself)."""
    return seeded_rng(seed, ORDER_STREAM).permutation(num_rows).astype(np.int64)


def build_ordering(columns: dict, order: str, descending: bool, seed: int) -> np.ndarray:
    """Row indices, position 0 first: `random`, or sorted by the score-file column `order`.

    Ties keep row order (stable sort), in both directions. `columns` maps a name to one
    value per row, as `ScoreTable.columns`.
    """
    lengths = {len(values) for values in columns.values()}
    assert len(lengths) <= 1, f"columns of different lengths: {lengths}"
    if order == "random":
        return random_ordering(lengths.pop() if lengths else 0, seed)
    if order not in columns:
        raise ValueError(f"config key 'sampler.order': unknown column {order!r}; "
                         f"expected random or one of the score file's columns: {', '.join(columns)}")
    values = np.asarray(columns[order])
    if values.dtype.kind not in "biuf":
        raise ValueError(f"config key 'sampler.order': column {order!r} is not numeric (dtype {values.dtype})")
    values = values.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise ValueError(f"config key 'sampler.order': column {order!r} has {len(bad)} non-finite values "
                         f"(first at row {bad[0]}: {values[bad[0]]})")
    if len(values) > 1 and np.all(values == values[0]):
        warnings.warn(f"sampler.order={order}: every row has the same value ({values[0]:g}), so the order is the "
                      "data file's own: this curriculum is then a fixed permutation, not an ordering by "
                      f"{order}", stacklevel=2)
    return np.argsort(-values if descending else values, kind="stable").astype(np.int64)


# ---- the Gaussian draw ----------------------------------------------------------------------

def gaussian_log_weights(num_positions: int, mu: float, sigma: float) -> np.ndarray:
    """log w_k = -(k - mu)^2 / (2 sigma^2) shifted so that max = 0: exp() is never all zero."""
    assert sigma > 0, sigma
    z = (np.arange(num_positions, dtype=np.float64) - mu) / sigma
    log_weights = -0.5 * z * z
    return log_weights - log_weights.max()


def gaussian_probabilities(num_positions: int, mu: float, sigma: float) -> np.ndarray:
    """The normalised weights (the distribution of a single draw)."""
    weights = np.exp(gaussian_log_weights(num_positions, mu, sigma))
    return weights / weights.sum()


def gumbel_top_k(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct indices drawn without replacement with probability proportional to exp(log_weights).

    Gumbel-top-k: the k largest of log_weights + Gumbel noise are distributed exactly as k
    successive draws, each proportional to the weights of what is left. The k indices are
    returned in random order, so the steps of an epoch are not sorted by weight.
    """
    assert 0 < k <= len(log_weights), (k, len(log_weights))
    keys = log_weights + rng.gumbel(size=len(log_weights))
    chosen = np.argpartition(-keys, k - 1)[:k]
    return rng.permutation(chosen).astype(np.int64)


# ---- the mu update --------------------------------------------------------------------------

def checked_accuracy(acc: float) -> float:
    """The epoch's fraction of correct rollouts; ValueError outside [0, 1] or NaN."""
    acc = float(acc)
    if not 0.0 <= acc <= 1.0:  # NaN fails this too
        raise ValueError(f"sampler update: accuracy must be in [0, 1], got {acc}")
    return acc


def mu_adjustment(acc: float, ang: Optional[float], *, n: float, alpha: float, beta: float,
                  use_angle: bool) -> float:
    """adj = n tanh(alpha (acc - beta)) [+ n tanh(alpha ang)]: positive (forward) when acc > beta."""
    acc = checked_accuracy(acc)
    adjustment = n * math.tanh(alpha * (acc - beta))
    if use_angle:
        if ang is None or not math.isfinite(ang):
            raise ValueError(f"sampler update: sampler.use_angle is true but the angle signal is {ang}")
        adjustment += n * math.tanh(alpha * float(ang))
    return adjustment


def next_mu(mu: float, adjustment: float, *, adj_min: float, adj_max: float, num_positions: int) -> float:
    """mu + clip(adjustment, adj_min, adj_max), clipped to [0, N - 1]."""
    step = min(max(adjustment, adj_min), adj_max)
    return min(max(mu + step, 0.0), num_positions - 1.0)


def resolve_positions(units: str, num_rows: int, *, sigma: float, n: float, adj_min: float,
                      adj_max: float, mu0: float) -> dict:
    """sigma, n, adj_min, adj_max, mu0 in positions. units=fraction: the widths are fractions of
    N and mu0 a fraction of the way from the first position (0) to the last (1 = N - 1)."""
    if units == "fraction":
        if not 0.0 <= mu0 <= 1.0:
            raise ValueError(f"config key 'sampler.mu0': with units=fraction it must be in [0, 1], got {mu0}")
        return {"sigma": sigma * num_rows, "n": n * num_rows, "adj_min": adj_min * num_rows,
                "adj_max": adj_max * num_rows, "mu0": mu0 * (num_rows - 1)}
    assert units == "positions", units
    return {"sigma": sigma, "n": n, "adj_min": adj_min, "adj_max": adj_max, "mu0": mu0}


# ---- the samplers ---------------------------------------------------------------------------

class Sampler:
    """What both schedules share: the ordering, sizes, the draw RNG, the epoch counter, the last draw."""
    schedule = ""

    def __init__(self, ordering: np.ndarray, num_per_epoch: int, seed: int):
        self.ordering = np.asarray(ordering, dtype=np.int64)  # position -> row index
        self.num_rows, self.num_per_epoch = len(self.ordering), int(num_per_epoch)
        if self.num_rows == 0:
            raise ValueError("sampler: the training set has no rows (N = 0)")
        if not 0 < self.num_per_epoch <= self.num_rows:
            raise ValueError(f"config key 'sampler.prompts_per_epoch': {self.num_per_epoch} prompts per epoch, "
                             f"but the training set has N = {self.num_rows} rows (draws are without replacement)")
        assert np.array_equal(np.sort(self.ordering), np.arange(self.num_rows)), "ordering is not a permutation"
        self._rng = seeded_rng(seed, DRAW_STREAM)
        self._epoch = 0
        self._mu: Optional[float] = None
        self.last_positions: Optional[np.ndarray] = None  # positions of the ordering drawn last

    @property
    def epoch(self) -> int:
        """Epochs completed (calls to update)."""
        return self._epoch

    @property
    def mu(self) -> Optional[float]:
        """Centre of the Gaussian, in positions (None for the uniform schedule)."""
        return self._mu

    def draw(self) -> np.ndarray:
        """B distinct row indices (int64) for this epoch."""
        self.last_positions = self._draw_positions()
        return self.ordering[self.last_positions]

    def update(self, acc: float, ang: Optional[float] = None) -> None:
        """After the epoch: accuracy = fraction of its rollouts judged correct, ang = mean angle signal."""
        raise NotImplementedError

    def _draw_positions(self) -> np.ndarray:
        raise NotImplementedError

    def _ordering_digest(self) -> str:
        return hashlib.sha1(self.ordering.tobytes()).hexdigest()[:16]

    def state_dict(self) -> dict:
        """mu, epoch and the RNG state: a restored sampler draws what this one would have."""
        return {"schedule": self.schedule, "num_rows": self.num_rows, "ordering": self._ordering_digest(),
                "mu": self._mu, "epoch": self._epoch, "rng": copy.deepcopy(self._rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.schedule, self.num_rows, self._ordering_digest())
        saved = (state["schedule"], state["num_rows"], state["ordering"])
        if saved != mine:
            raise ValueError(f"sampler state was saved with (schedule, N, ordering digest) = {saved}, this run has "
                             f"{mine}: resume with the same data, score file and sampler settings")
        self._mu = None if state["mu"] is None else float(state["mu"])
        self._epoch = int(state["epoch"])
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.last_positions = None


class UniformSampler(Sampler):
    """Vanilla GRPO: a fresh uniformly random subset of B rows each epoch."""
    schedule = "uniform"

    def __init__(self, num_rows: int, num_per_epoch: int, seed: int):
        super().__init__(np.arange(num_rows), num_per_epoch, seed)

    def _draw_positions(self) -> np.ndarray:
        return self._rng.choice(self.num_rows, size=self.num_per_epoch, replace=False).astype(np.int64)

    def update(self, acc: float, ang: Optional[float] = None) -> None:
        """Count the epoch (the accuracy is checked, the draw does not depend on it)."""
        checked_accuracy(acc)
        self._epoch += 1


class GaussianSampler(Sampler):
    """GAIN-RL: B positions ~ Gaussian(mu, sigma) over the ordering, without replacement; mu moves
    after each epoch by the accuracy and angle signal. All lengths in positions."""
    schedule = "gaussian"

    def __init__(self, ordering: np.ndarray, num_per_epoch: int, seed: int, *, sigma: float, n: float,
                 alpha: float, beta: float, adj_min: float, adj_max: float, mu0: float = 0.0,
                 use_angle: bool = True):
        super().__init__(ordering, num_per_epoch, seed)
        if not 0.0 <= mu0 <= self.num_rows - 1:
            raise ValueError(f"config key 'sampler.mu0': {mu0} positions is outside [0, N - 1 = {self.num_rows - 1}]")
        if not sigma > 0:
            raise ValueError(f"config key 'sampler.sigma': must be positive, got {sigma} positions")
        self.sigma, self.n, self.alpha, self.beta = float(sigma), float(n), float(alpha), float(beta)
        self.adj_min, self.adj_max, self.use_angle = float(adj_min), float(adj_max), bool(use_angle)
        self._mu = float(mu0)

    def log_weights(self) -> np.ndarray:
        """Current log-weights over positions (max 0)."""
        return gaussian_log_weights(self.num_rows, self._mu, self.sigma)

    def _draw_positions(self) -> np.ndarray:
        return gumbel_top_k(self.log_weights(), self.num_per_epoch, self._rng)

    def update(self, acc: float, ang: Optional[float] = None) -> None:
        """Move mu with the epoch's accuracy (fraction correct) and mean angle signal."""
        adjustment = mu_adjustment(acc, ang, n=self.n, alpha=self.alpha, beta=self.beta, use_angle=self.use_angle)
        self._mu = next_mu(self._mu, adjustment, adj_min=self.adj_min, adj_max=self.adj_max,
                           num_positions=self.num_rows)
        self._epoch += 1


def build_sampler(cfg, columns: Optional[dict], num_rows: int, seed: int) -> Sampler:
    """The sampler a SamplerConfig asks for, over `num_rows` rows; `columns` is the score file's
    (None is fine for schedule=uniform or order=random). The schedule is resolved here, once."""
    if cfg.schedule == "uniform":
        return UniformSampler(num_rows, cfg.prompts_per_epoch, seed)
    assert cfg.schedule == "gaussian", cfg.schedule
    if columns is None:
        if cfg.order != "random":
            raise ValueError(f"config key 'sampler.order': order={cfg.order!r} needs a score file "
                             "(train.score_file, or let the scorer run first)")
        ordering = random_ordering(num_rows, seed)
    else:
        ordering = build_ordering(columns, cfg.order, cfg.descending, seed)
        if len(ordering) != num_rows:
            raise ValueError(f"the score file has {len(ordering)} rows but the training set has {num_rows}")
    lengths = resolve_positions(cfg.units, num_rows, sigma=cfg.sigma, n=cfg.n, adj_min=cfg.adj_min,
                                adj_max=cfg.adj_max, mu0=cfg.mu0)
    return GaussianSampler(ordering, cfg.prompts_per_epoch, seed, alpha=cfg.alpha, beta=cfg.beta,
                           use_angle=cfg.use_angle, **lengths)


# ---- the distributed edge -------------------------------------------------------------------

def draw_on_rank0_and_broadcast(sampler: Sampler) -> np.ndarray:
    """Rank 0 draws the epoch's row indices and every rank returns them; other ranks' RNGs stay put."""
    rows = sampler.draw() if is_rank0() else None
    return np.asarray(broadcast_from_rank0(rows), dtype=np.int64)
