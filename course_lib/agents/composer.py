"""Which agent to trust: equal weights, the running win rate, and Thompson sampling on wins and losses.

Every composer turns per-agent (possibly discounted) win and loss counts into weights that sum to one. The
counts only ever hold outcomes already resolved, so the weights at time t use what was known at t.

* :class:`EqualWeightComposer` - trusts everyone the same (the baseline that never learns);
* :class:`WinRateComposer` - all weight on the best running win rate (greedy: slow to notice a change, and
  it never explores);
* :class:`ThompsonComposer` - each agent's win probability has a Beta(1 + wins, 1 + losses) posterior; the
  weight of an agent is the share of posterior draws in which it is the best (``n_draws=1``: pick one agent
  per step, classic Thompson sampling). With ``half_life`` the counts decay geometrically, so an agent whose
  skill changed is re-learned (discounted Thompson sampling, Raj and Kalyani, 2017).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "EqualWeightComposer",
    "OutcomeCounts",
    "ThompsonComposer",
    "WinRateComposer",
    "make_skill_schedule",
    "simulate_skill_switch",
]


class OutcomeCounts:
    """Win and loss counts per agent (rows: independent runs), optionally discounted per step.

    ``half_life`` is in steps: after ``half_life`` steps an old outcome counts half. ``step()`` ages the counts
    by one step; ``add(wins, losses)`` adds this step's resolved outcomes.
    """

    def __init__(self, n_agents: int, half_life: float | None = None, n_runs: int | None = None):
        shape = (n_agents,) if n_runs is None else (n_runs, n_agents)
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life must be > 0 steps (or None), got {half_life}.")
        self.gamma = 1.0 if half_life is None else 0.5 ** (1.0 / float(half_life))
        self.wins = np.zeros(shape)
        self.losses = np.zeros(shape)

    def step(self) -> None:
        if self.gamma != 1.0:
            self.wins *= self.gamma
            self.losses *= self.gamma

    def add(self, wins, losses) -> None:
        self.wins += np.asarray(wins, dtype=float)
        self.losses += np.asarray(losses, dtype=float)


def _one_hot_best(scores: np.ndarray) -> np.ndarray:
    best = scores == scores.max(axis=-1, keepdims=True)
    return best / best.sum(axis=-1, keepdims=True)


@dataclass
class EqualWeightComposer:
    name: str = "equal"
    half_life: float | None = None

    def weights(self, wins: np.ndarray, losses: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        w = np.ones_like(np.asarray(wins, dtype=float))
        return w / w.shape[-1]


@dataclass
class WinRateComposer:
    """All weight on the highest running win rate (an agent without outcomes counts as 1/2; ties share)."""

    name: str = "win_rate"
    half_life: float | None = None

    def weights(self, wins: np.ndarray, losses: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        wins, losses = np.asarray(wins, float), np.asarray(losses, float)
        n = wins + losses
        rate = np.where(n > 0, wins / np.where(n > 0, n, 1.0), 0.5)
        return _one_hot_best(rate)


@dataclass
class ThompsonComposer:
    """Thompson sampling over agents with Beta(prior_wins + wins, prior_losses + losses) posteriors."""

    name: str = "thompson"
    half_life: float | None = None
    n_draws: int = 1
    prior: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.n_draws < 1:
            raise ValueError(f"n_draws must be >= 1, got {self.n_draws}.")
        if min(self.prior) <= 0:
            raise ValueError(f"Beta prior parameters must be > 0, got {self.prior}.")

    def weights(self, wins: np.ndarray, losses: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = self.prior[0] + np.asarray(wins, float)
        b = self.prior[1] + np.asarray(losses, float)
        draws = rng.beta(a, b, size=(self.n_draws, *a.shape))  # one posterior sample per agent per draw
        best = draws.argmax(axis=-1)
        n = a.shape[-1]
        return (best[..., None] == np.arange(n)).mean(axis=0)


def make_skill_schedule(n_steps: int = 2000, n_agents: int = 4, switch_at: Sequence[int] | None = None,
                        high: float = 0.6, low: float = 0.45, seed: int = 0) -> pd.DataFrame:
    """Win probability of each agent at each step: in each segment one agent is skilled (``high``), the
    others sit between ``low`` and 1/2. ``switch_at`` (default: thirds) are the known switch steps."""
    if switch_at is None:
        switch_at = [n_steps // 3, 2 * n_steps // 3]
    edges = [0, *sorted(int(s) for s in switch_at), n_steps]
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"switch_at must be increasing steps inside (0, {n_steps}), got {list(switch_at)}.")
    rng = np.random.default_rng(seed)
    p = np.zeros((n_steps, n_agents))
    best = None
    for a, b in zip(edges, edges[1:]):
        choices = [i for i in range(n_agents) if i != best]
        best = int(rng.choice(choices))
        row = rng.uniform(low, 0.5, n_agents)
        row[best] = high
        p[a:b] = row
    out = pd.DataFrame(p, columns=[f"agent_{i}" for i in range(n_agents)])
    out.index.name = "step"
    out.attrs["switch_at"] = list(edges[1:-1])
    return out


def simulate_skill_switch(schedule: pd.DataFrame, composers: Sequence, n_runs: int = 200,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """Cumulative expected regret of each composer on agents with the win probabilities ``schedule``.

    Every step each agent's trade wins with its probability (all outcomes are observed, as when every agent
    trades on paper), the composer's weights at the step use only earlier outcomes, and the regret of the step
    is ``p_best - sum_i w_i p_i``. Returns ``{name: (n_runs, n_steps)}`` cumulative regret.
    """
    p = schedule.to_numpy(dtype=float)
    n_steps, n_agents = p.shape
    rng = np.random.default_rng(seed)
    wins = rng.random((n_steps, n_runs, n_agents)) < p[:, None, :]  # the same outcomes for every composer
    out = {}
    for k, comp in enumerate(composers):
        crng = np.random.default_rng([seed, k])
        counts = OutcomeCounts(n_agents, comp.half_life, n_runs=n_runs)
        regret = np.zeros((n_runs, n_steps))
        for t in range(n_steps):
            w = comp.weights(counts.wins, counts.losses, crng)
            regret[:, t] = p[t].max() - w @ p[t]
            counts.step()
            counts.add(wins[t], ~wins[t])
        out[comp.name] = np.cumsum(regret, axis=1)
    return out
