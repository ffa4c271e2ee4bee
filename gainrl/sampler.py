"""The curriculum: which training rows each epoch draws, and how the draw moves (METHOD.md section 3).

Every schedule draws B of the N rows without replacement with probability proportional to
exp(log-weights) over positions of an ordering (Gumbel-top-k); a schedule only says what the
log-weights are:
- gaussian (GAIN-RL): the rows ordered once (by score, another score-file column, or at random),
  w_k ~ exp(-(k - mu)^2 / (2 sigma^2)); after each epoch, accuracy and the angle signal move mu
  (optionally with the angle centred on its earlier epochs' mean, and the ordering re-scored);
- uniform (vanilla GRPO): equal weights, a fresh random subset every epoch;
- learnability: p (1 - p) from each row's last observed pass rate, a Beta prior for unseen rows.
After each step the sampler observes every group's outcome (`Outcomes`, gathered to rank 0) in a
per-row store (`RowStore`), which is part of its state. Two modifiers work with any schedule: the
GRESO skip filter (rows whose last z groups had one reward for all are set aside with probability
1 - keep_base^z) here, and DAPO's dynamic sampling (extra draws, `draw_more`) in gainrl/groups.py.

Everything here is numbers in, numbers out, except `build_sampler` (reads a SamplerConfig) and the
collectives at the end of the module. Randomness: the draws and the random ordering come from two
independent numpy streams of one int seed, so a `random` ordering is not correlated with the noise
of the draws.
"""
from __future__ import annotations

import copy
import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .dist import broadcast_from_rank0, gather_to_rank0, is_rank0

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


def accuracy_term(acc: float, *, n: float, alpha: float, beta: float) -> float:
    """n tanh(alpha (acc - beta)): positive (forward) when the epoch's accuracy is above the target beta."""
    return n * math.tanh(alpha * (checked_accuracy(acc) - beta))


def angle_term(ang: float, *, n: float, alpha: float) -> float:
    """n tanh(alpha ang): the angle signal's share of the mu step."""
    return n * math.tanh(alpha * float(ang))


def centred_angle(ang: float, earlier_sum: float, earlier_epochs: int) -> float:
    """The angle signal minus the mean of the earlier epochs' (0 at the first epoch). The raw signal is
    always positive (about 0.4-0.5 on the demo), which moves mu at a near-constant speed whatever the
    accuracy; centred, only its change moves mu."""
    return 0.0 if earlier_epochs == 0 else float(ang) - earlier_sum / earlier_epochs


def mu_adjustment(acc: float, ang: Optional[float], *, n: float, alpha: float, beta: float,
                  use_angle: bool) -> float:
    """adj = n tanh(alpha (acc - beta)) [+ n tanh(alpha ang)]: positive (forward) when acc > beta."""
    adjustment = accuracy_term(acc, n=n, alpha=alpha, beta=beta)
    if use_angle:
        if ang is None or not math.isfinite(ang):
            raise ValueError(f"sampler update: sampler.use_angle is true but the angle signal is {ang}")
        adjustment += angle_term(ang, n=n, alpha=alpha)
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


# ---- what the sampler learns about each row ----------------------------------------------------

@dataclass
class Outcomes:
    """One step's outcomes, one entry per group (prompt): what the samplers that adapt per row read.
    Gathered from every rank to rank 0 after the step; rows are distinct."""
    rows: np.ndarray  # row index
    rollouts: np.ndarray  # rollouts of the group
    correct: np.ndarray  # of them judged correct (reward >= 1)
    response_tokens: np.ndarray  # tokens the group generated
    reward_variance: np.ndarray  # population variance of the group's rewards (0: GRPO learns nothing from it)

    @staticmethod
    def concat(parts: list["Outcomes"]) -> "Outcomes":
        return Outcomes(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts])
                          for f in ("rows", "rollouts", "correct", "response_tokens", "reward_variance")))


class RowStore:
    """Per-row history, updated from each step's Outcomes: times drawn, rollouts and correct ones in all,
    the last group's rollouts and correct ones, and the streak of consecutive zero-variance groups."""
    FIELDS = ("times_seen", "rollouts", "correct", "last_rollouts", "last_correct", "zero_variance_streak")

    def __init__(self, num_rows: int):
        self.num_rows = num_rows
        for name in self.FIELDS:
            setattr(self, name, np.zeros(num_rows, dtype=np.int64))

    def add(self, outcomes: Outcomes) -> None:
        rows = np.asarray(outcomes.rows, dtype=np.int64)
        assert len(np.unique(rows)) == len(rows), "a row appears twice in one step's outcomes"
        assert len(rows) == 0 or (rows.min() >= 0 and rows.max() < self.num_rows), "row index out of range"
        rollouts, correct = np.asarray(outcomes.rollouts, np.int64), np.asarray(outcomes.correct, np.int64)
        self.times_seen[rows] += 1
        self.rollouts[rows] += rollouts
        self.correct[rows] += correct
        self.last_rollouts[rows], self.last_correct[rows] = rollouts, correct
        zero = np.asarray(outcomes.reward_variance, np.float64) <= 0.0
        self.zero_variance_streak[rows] = np.where(zero, self.zero_variance_streak[rows] + 1, 0)

    def state_dict(self) -> dict:
        """Only the rows seen (a run sees a small part of a large training set)."""
        seen = np.flatnonzero(self.times_seen)
        return {"rows": seen.tolist(), **{name: getattr(self, name)[seen].tolist() for name in self.FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        rows = np.asarray(state["rows"], dtype=np.int64)
        for name in self.FIELDS:
            values = np.zeros(self.num_rows, dtype=np.int64)
            values[rows] = state[name]
            setattr(self, name, values)


# ---- pure rules of the adaptive samplers and filters -------------------------------------------

def smoothed_pass_rate(correct: np.ndarray, rollouts: np.ndarray, prior: float, strength: float) -> np.ndarray:
    """(correct + strength * prior) / (rollouts + strength): a Beta-prior mean; a row never seen gets `prior`."""
    return (np.asarray(correct, np.float64) + strength * prior) / (np.asarray(rollouts, np.float64) + strength)


def learnability_log_weights(pass_rate: np.ndarray) -> np.ndarray:
    """log p(1 - p): the expected reward variance of a row; highest at p = 1/2, lowest at 0 and 1."""
    p = np.asarray(pass_rate, np.float64)
    return np.log(np.maximum(p * (1.0 - p), 1e-12))


def keep_probability(zero_variance_streak: np.ndarray, keep_base: float) -> np.ndarray:
    """GRESO's rule: a row whose last z groups all had zero reward variance is kept with probability
    keep_base^z (1 for a row with informative last group), i.e. skipped with 1 - keep_base^z."""
    return np.power(float(keep_base), np.asarray(zero_variance_streak, np.float64))


def demote(log_weights: np.ndarray, skipped: np.ndarray) -> np.ndarray:
    """Move the skipped entries below every kept one, keeping their order among themselves: a draw then
    takes them only when the kept ones run out (so a draw of B always has B rows)."""
    if not skipped.any():
        return log_weights
    finite = log_weights[np.isfinite(log_weights)]
    span = float(finite.max() - finite.min()) if len(finite) else 0.0
    return np.where(skipped, log_weights - span - 1e4, log_weights)


# ---- the samplers ---------------------------------------------------------------------------

class Sampler:
    """What every schedule shares: the ordering, sizes, the draw RNG, the epoch counter, the per-row store,
    the GRESO skip filter, and the draw itself: B positions without replacement with probability
    proportional to exp(log_weights()) (Gumbel-top-k). A schedule only says what log_weights() are."""
    schedule = ""

    def __init__(self, ordering: np.ndarray, num_per_epoch: int, seed: int, *, skip_keep_base: Optional[float] = None):
        self.ordering = np.asarray(ordering, dtype=np.int64)  # position -> row index
        self.num_rows, self.num_per_epoch = len(self.ordering), int(num_per_epoch)
        if self.num_rows == 0:
            raise ValueError("sampler: the training set has no rows (N = 0)")
        if not 0 < self.num_per_epoch <= self.num_rows:
            raise ValueError(f"config key 'sampler.prompts_per_epoch': {self.num_per_epoch} prompts per epoch, "
                             f"but the training set has N = {self.num_rows} rows (draws are without replacement)")
        assert np.array_equal(np.sort(self.ordering), np.arange(self.num_rows)), "ordering is not a permutation"
        self._initial_digest = self._ordering_digest()
        self._reordered = False
        self._rng = seeded_rng(seed, DRAW_STREAM)
        self._epoch = 0
        self._mu: Optional[float] = None
        self.skip_keep_base = skip_keep_base  # None: no skipping
        self.store = RowStore(self.num_rows)
        self.last_positions: Optional[np.ndarray] = None  # positions of the ordering drawn last
        self.last_skipped = 0  # rows the skip filter set aside at the last draw
        self.last_update: Optional[dict] = None  # the last update's signals and terms (what moved mu)

    @property
    def epoch(self) -> int:
        """Epochs completed (calls to update)."""
        return self._epoch

    @property
    def mu(self) -> Optional[float]:
        """Centre of the Gaussian, in positions (None for the schedules without one)."""
        return self._mu

    def log_weights(self) -> np.ndarray:
        """The schedule's log-weights over positions (before the skip filter)."""
        raise NotImplementedError

    def draw(self) -> np.ndarray:
        """B distinct row indices (int64) for this epoch."""
        self.last_positions = self._draw_positions(self.num_per_epoch, exclude_rows=())
        return self.ordering[self.last_positions]

    def draw_more(self, k: int, exclude_rows) -> np.ndarray:
        """Up to k more rows from the current weights, none of `exclude_rows` (dynamic sampling's extra rounds)."""
        return self.ordering[self._draw_positions(k, exclude_rows)]

    def _draw_positions(self, k: int, exclude_rows) -> np.ndarray:
        log_weights = self.log_weights()
        self.last_skipped = 0
        if self.skip_keep_base is not None:
            streak = self.store.zero_variance_streak[self.ordering]
            candidates = np.flatnonzero(streak > 0)  # only they draw a coin: the others are always kept
            skipped = np.zeros(self.num_rows, dtype=bool)
            coins = self._rng.random(len(candidates))
            skipped[candidates] = coins >= keep_probability(streak[candidates], self.skip_keep_base)
            self.last_skipped = int(skipped.sum())
            log_weights = demote(log_weights, skipped)
        exclude = np.asarray(list(exclude_rows), dtype=np.int64)
        if len(exclude):
            positions = np.empty(self.num_rows, dtype=np.int64)
            positions[self.ordering] = np.arange(self.num_rows)
            log_weights = log_weights.copy()
            log_weights[positions[exclude]] = -np.inf
        k = min(int(k), int(np.isfinite(log_weights).sum()))
        return gumbel_top_k(log_weights, k, self._rng) if k > 0 else np.zeros(0, dtype=np.int64)

    def observe(self, outcomes: Outcomes) -> None:
        """After a step (rank 0): the per-row outcomes of every group it generated."""
        self.store.add(outcomes)

    def update(self, acc: float, ang: Optional[float] = None) -> None:
        """After the epoch: accuracy = fraction of its rollouts judged correct, ang = mean angle signal."""
        checked_accuracy(acc)
        self.last_update = {"accuracy": float(acc), "angle": None if ang is None else float(ang)}
        self._epoch += 1

    def reorder(self, ordering: np.ndarray) -> None:
        """A new ordering (re-scoring); mu keeps its position: the curriculum keeps how far it has come."""
        ordering = np.asarray(ordering, dtype=np.int64)
        assert len(ordering) == self.num_rows and np.array_equal(np.sort(ordering), np.arange(self.num_rows))
        self.ordering, self._reordered = ordering, True

    def _ordering_digest(self) -> str:
        return hashlib.sha1(self.ordering.tobytes()).hexdigest()[:16]

    def state_dict(self) -> dict:
        """mu, epoch, the RNG state, the per-row store (and the ordering, once re-scored): a restored
        sampler draws what this one would have."""
        return {"schedule": self.schedule, "num_rows": self.num_rows, "ordering": self._initial_digest,
                "mu": self._mu, "epoch": self._epoch, "rng": copy.deepcopy(self._rng.bit_generator.state),
                "store": self.store.state_dict(),
                "reordered": self.ordering.tolist() if self._reordered else None}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.schedule, self.num_rows, self._initial_digest)
        saved = (state["schedule"], state["num_rows"], state["ordering"])
        if saved != mine:
            raise ValueError(f"sampler state was saved with (schedule, N, ordering digest) = {saved}, this run has "
                             f"{mine}: resume with the same data, score file and sampler settings")
        self._mu = None if state["mu"] is None else float(state["mu"])
        self._epoch = int(state["epoch"])
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.store.load_state_dict(state["store"])
        if state.get("reordered") is not None:
            self.reorder(np.asarray(state["reordered"]))
        self.last_positions = None


class UniformSampler(Sampler):
    """Vanilla GRPO: a fresh uniformly random subset of B rows each epoch."""
    schedule = "uniform"

    def __init__(self, num_rows: int, num_per_epoch: int, seed: int, **filters):
        super().__init__(np.arange(num_rows), num_per_epoch, seed, **filters)

    def log_weights(self) -> np.ndarray:
        return np.zeros(self.num_rows)


class LearnabilitySampler(Sampler):
    """Learnability sampling: row weights p(1 - p), p = the row's pass rate in its last group, smoothed by a
    Beta prior (mean `prior`, `strength` pseudo-rollouts); a row not yet seen has p = prior."""
    schedule = "learnability"

    def __init__(self, num_rows: int, num_per_epoch: int, seed: int, *, prior: float, strength: float, **filters):
        super().__init__(np.arange(num_rows), num_per_epoch, seed, **filters)
        self.prior, self.strength = float(prior), float(strength)

    def pass_rates(self) -> np.ndarray:
        return smoothed_pass_rate(self.store.last_correct, self.store.last_rollouts, self.prior, self.strength)

    def log_weights(self) -> np.ndarray:
        return learnability_log_weights(self.pass_rates())


class GaussianSampler(Sampler):
    """GAIN-RL: B positions ~ Gaussian(mu, sigma) over the ordering, without replacement; mu moves
    after each epoch by the accuracy and angle signal. All lengths in positions. With `center_angle`
    the angle term uses the signal minus the mean of the earlier epochs' signals (0 at the first epoch)."""
    schedule = "gaussian"

    def __init__(self, ordering: np.ndarray, num_per_epoch: int, seed: int, *, sigma: float, n: float,
                 alpha: float, beta: float, adj_min: float, adj_max: float, mu0: float = 0.0,
                 use_angle: bool = True, center_angle: bool = False, **filters):
        super().__init__(ordering, num_per_epoch, seed, **filters)
        if not 0.0 <= mu0 <= self.num_rows - 1:
            raise ValueError(f"config key 'sampler.mu0': {mu0} positions is outside [0, N - 1 = {self.num_rows - 1}]")
        if not sigma > 0:
            raise ValueError(f"config key 'sampler.sigma': must be positive, got {sigma} positions")
        self.sigma, self.n, self.alpha, self.beta = float(sigma), float(n), float(alpha), float(beta)
        self.adj_min, self.adj_max, self.use_angle = float(adj_min), float(adj_max), bool(use_angle)
        self.center_angle = bool(center_angle)
        self._mu = float(mu0)
        self._angle_sum, self._angle_epochs = 0.0, 0  # the earlier epochs' angle signals (for center_angle)

    def log_weights(self) -> np.ndarray:
        """Current log-weights over positions (max 0)."""
        return gaussian_log_weights(self.num_rows, self._mu, self.sigma)

    def update(self, acc: float, ang: Optional[float] = None) -> None:
        """Move mu with the epoch's accuracy (fraction correct) and mean angle signal."""
        acc = checked_accuracy(acc)
        acc_term = accuracy_term(acc, n=self.n, alpha=self.alpha, beta=self.beta)
        ang_term, signal = 0.0, None
        if self.use_angle:
            if ang is None or not math.isfinite(ang):
                raise ValueError(f"sampler update: sampler.use_angle is true but the angle signal is {ang}")
            signal = centred_angle(ang, self._angle_sum, self._angle_epochs) if self.center_angle else float(ang)
            ang_term = angle_term(signal, n=self.n, alpha=self.alpha)
            self._angle_sum, self._angle_epochs = self._angle_sum + float(ang), self._angle_epochs + 1
        before = self._mu
        self._mu = next_mu(self._mu, acc_term + ang_term, adj_min=self.adj_min, adj_max=self.adj_max,
                           num_positions=self.num_rows)
        self.last_update = {"accuracy": acc, "angle": None if ang is None else float(ang), "angle_used": signal,
                            "accuracy_term": acc_term, "angle_term": ang_term, "mu_step": self._mu - before}
        self._epoch += 1

    def state_dict(self) -> dict:
        return {**super().state_dict(), "angle_history": [self._angle_sum, self._angle_epochs]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._angle_sum, self._angle_epochs = float(state["angle_history"][0]), int(state["angle_history"][1])


def build_sampler(cfg, columns: Optional[dict], num_rows: int, seed: int) -> Sampler:
    """The sampler a SamplerConfig asks for, over `num_rows` rows; `columns` is the score file's
    (None is fine for schedule=uniform or learnability, or order=random). Resolved here, once."""
    filters = {"skip_keep_base": cfg.skip_keep_base if cfg.skip_zero_variance else None}
    if cfg.schedule == "uniform":
        return UniformSampler(num_rows, cfg.prompts_per_epoch, seed, **filters)
    if cfg.schedule == "learnability":
        return LearnabilitySampler(num_rows, cfg.prompts_per_epoch, seed, prior=cfg.prior_pass_rate,
                                   strength=cfg.prior_strength, **filters)
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
                           use_angle=cfg.use_angle, center_angle=cfg.center_angle, **lengths, **filters)


# ---- the distributed edge -------------------------------------------------------------------

def draw_on_rank0_and_broadcast(sampler: Sampler) -> np.ndarray:
    """Rank 0 draws the epoch's row indices and every rank returns them; other ranks' RNGs stay put."""
    rows = sampler.draw() if is_rank0() else None
    return np.asarray(broadcast_from_rank0(rows), dtype=np.int64)


def draw_more_on_rank0_and_broadcast(sampler: Sampler, k: int, exclude_rows) -> np.ndarray:
    """Rank 0 draws up to k more rows (none of `exclude_rows`, the same on every rank); every rank returns them."""
    rows = sampler.draw_more(k, exclude_rows) if is_rank0() else None
    return np.asarray(broadcast_from_rank0(rows), dtype=np.int64)


def observe_on_rank0(sampler: Sampler, local: Outcomes) -> None:
    """Every rank's outcomes of the step, gathered to rank 0, whose sampler is the one that draws."""
    gathered = gather_to_rank0(local)
    if is_rank0():
        sampler.observe(Outcomes.concat(gathered))
