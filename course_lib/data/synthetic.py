"""A synthetic market with a known answer: regime-switching prices with planted, recurring motifs.

Real prices never tell you *why* they moved, so you cannot score a regime detector or prove that memory
helps on them alone. This generator writes the ground truth down while it builds the data:

* **Regimes** (``bull``, ``bear``, ``sideways``, ``crash``) follow a Markov chain; each has its own drift
  and volatility (a crash is short, violent and falls). Innovations are fat-tailed (Student t).
* **Motifs** are a few short return shapes (a double bottom, a double top, a failed rebound, a failed
  sell-off) planted at random, non-overlapping places. Each is followed by a *known aftermath*: a drift
  of ``aftermath_strength`` volatility units per bar, up or down, over the next ``aftermath_bars`` bars.

The motifs are designed so that only their *shape* predicts the aftermath: every shape sums to a zero
return (no net move), shapes and their mirror images have opposite aftermaths, and two of the four end
rising but one is followed by a rise and the other by a fall. So neither the regime, nor the motif's net
move, nor the sign of recent momentum at the motif's end says which way the aftermath goes; a model that
remembers "I have seen this shape before, and here is what followed" does. ``aftermath_strength`` is the
signal-to-noise knob: 0 plants shapes with no consequence (a useful placebo).

Everything is deterministic given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .loaders import validate_ohlcv

__all__ = [
    "MOTIF_LIBRARY",
    "PLANTED_MARKET",
    "UNSEEN_MARKET",
    "UNSEEN_MARKET_SEED",
    "SyntheticConfig",
    "SyntheticMarket",
    "append_market",
    "make_synthetic_market",
    "motif_shape",
]

#: Motif name -> (knots of the cumulative log-price path on [0, 1], planted aftermath direction).
#: Paths start and end at 0, so a motif has no net return; the mirror of a shape has the opposite aftermath.
MOTIF_LIBRARY: dict[str, tuple[tuple[tuple[float, ...], tuple[float, ...]], int]] = {
    "double_bottom": (((0.0, 0.25, 0.5, 0.75, 1.0), (0.0, -1.0, -0.4, -1.0, 0.0)), +1),
    "double_top": (((0.0, 0.25, 0.5, 0.75, 1.0), (0.0, 1.0, 0.4, 1.0, 0.0)), -1),
    "failed_rebound": (((0.0, 0.45, 1.0), (0.0, -1.2, 0.0)), -1),
    "failed_selloff": (((0.0, 0.45, 1.0), (0.0, 1.2, 0.0)), +1),
}


def motif_shape(name: str, length: int) -> np.ndarray:
    """Per-bar returns of a library motif over ``length`` bars: zero sum, unit root-mean-square.

    Unit RMS means a motif bar is as volatile as an ordinary bar once scaled by the regime's volatility,
    so a motif cannot be spotted by its size, only by its shape.
    """
    if name not in MOTIF_LIBRARY:
        raise ValueError(f"unknown motif {name!r}; choose from {sorted(MOTIF_LIBRARY)}.")
    if length < 4:
        raise ValueError(f"a motif needs at least 4 bars to have a shape, got length={length}.")
    (xs, ys), _ = MOTIF_LIBRARY[name]
    path = np.interp(np.linspace(0.0, 1.0, length + 1), xs, ys)
    ret = np.diff(path)
    ret = ret - ret.mean()
    return ret / np.sqrt(np.mean(ret**2))


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic market. Per-regime tuples follow the order of ``regime_names``.

    Attributes:
        regime_names: Regime labels.
        drift: Mean log return per bar in each regime.
        vol: Standard deviation of the log return per bar in each regime.
        mean_duration: Expected length of a regime spell in bars (stay probability ``1 - 1/duration``).
        switch_probs: Row i: where regime i goes when it ends (diagonal 0, rows sum to 1).
        tail_df: Degrees of freedom of the Student-t innovations (``None``: Gaussian).
        motifs: Library motifs to plant (see :data:`MOTIF_LIBRARY`); empty for none.
        motif_len: Bars per motif (8-16 is a good range for daily bars and 64-bar windows).
        motif_coverage: Share of bars covered by motifs plus their aftermaths.
        motif_noise: Noise added to a motif bar, in units of the regime volatility (0: exact copies).
        aftermath_bars: Bars of planted drift after a motif ends.
        aftermath_strength: Planted drift per aftermath bar in units of the regime volatility: the
            signal-to-noise knob (0.3 gives a per-bar direction hit rate near 62% to a perfect memory).
        min_gap: Bars left free between one aftermath and the next motif.
        start: First bar's date (bars are business days).
        initial_price, base_volume: Scale of the price and volume series.
        volume_vol_beta: Elasticity of volume to the regime's volatility (high volatility, heavy trading).
        volume_shock_beta: Extra log volume per unit of surprise ``|return| / vol`` on the bar.
    """

    regime_names: tuple[str, ...] = ("bull", "bear", "sideways", "crash")
    drift: tuple[float, ...] = (0.0006, -0.0005, 0.0, -0.012)
    vol: tuple[float, ...] = (0.008, 0.016, 0.010, 0.035)
    mean_duration: tuple[float, ...] = (250.0, 110.0, 140.0, 12.0)
    switch_probs: tuple[tuple[float, ...], ...] = (
        (0.0, 0.35, 0.53, 0.12),
        (0.40, 0.0, 0.30, 0.30),
        (0.55, 0.30, 0.0, 0.15),
        (0.25, 0.55, 0.20, 0.0),
    )
    tail_df: float | None = 5.0
    motifs: tuple[str, ...] = ("double_bottom", "double_top", "failed_rebound", "failed_selloff")
    motif_len: int = 12
    motif_coverage: float = 0.3
    motif_noise: float = 0.35
    aftermath_bars: int = 10
    aftermath_strength: float = 0.3
    min_gap: int = 5
    start: str = "2000-01-03"
    initial_price: float = 100.0
    base_volume: float = 1.0e6
    volume_vol_beta: float = 1.0
    volume_shock_beta: float = 0.25

    def __post_init__(self) -> None:
        k = len(self.regime_names)
        if k < 1 or len(set(self.regime_names)) != k:
            raise ValueError(f"regime_names must be non-empty and unique, got {self.regime_names}.")
        for name in ("drift", "vol", "mean_duration"):
            if len(getattr(self, name)) != k:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} values but there are {k} regimes "
                    f"{self.regime_names}: give one value per regime."
                )
        if any(v <= 0 for v in self.vol):
            raise ValueError(f"vol must be > 0 in every regime, got {self.vol}.")
        if any(d < 1 for d in self.mean_duration):
            raise ValueError(f"mean_duration must be >= 1 bar, got {self.mean_duration}.")
        sp = np.asarray(self.switch_probs, dtype=float)
        if sp.shape != (k, k):
            raise ValueError(f"switch_probs must be a {k}x{k} matrix (one row per regime), got shape {sp.shape}.")
        if k > 1:
            if (sp < 0).any() or not np.allclose(np.diag(sp), 0.0) or not np.allclose(sp.sum(axis=1), 1.0):
                raise ValueError(
                    "switch_probs rows must be probabilities of moving to *another* regime: non-negative, "
                    f"0 on the diagonal, each row summing to 1; got {self.switch_probs}."
                )
        if self.tail_df is not None and self.tail_df <= 2:
            raise ValueError(f"tail_df must be > 2 (finite variance) or None for Gaussian, got {self.tail_df}.")
        unknown = [m for m in self.motifs if m not in MOTIF_LIBRARY]
        if unknown:
            raise ValueError(f"unknown motif(s) {unknown}; choose from {sorted(MOTIF_LIBRARY)}.")
        if len(set(self.motifs)) != len(self.motifs):
            raise ValueError(f"motifs must not repeat, got {self.motifs}.")
        if self.motif_len < 4:
            raise ValueError(f"motif_len must be >= 4 bars, got {self.motif_len}.")
        if self.aftermath_bars < 1:
            raise ValueError(f"aftermath_bars must be >= 1, got {self.aftermath_bars}.")
        if not 0.0 <= self.motif_coverage <= 0.9:
            raise ValueError(f"motif_coverage must be in [0, 0.9], got {self.motif_coverage}.")
        if self.motif_noise < 0 or self.aftermath_strength < 0 or self.min_gap < 0:
            raise ValueError("motif_noise, aftermath_strength and min_gap must be >= 0.")
        if self.initial_price <= 0 or self.base_volume <= 0:
            raise ValueError("initial_price and base_volume must be > 0.")

    @property
    def transition_matrix(self) -> np.ndarray:
        """One-step regime transition matrix ``P[i, j] = P(next = j | now = i)``."""
        stay = 1.0 - 1.0 / np.asarray(self.mean_duration, dtype=float)
        k = len(self.regime_names)
        if k == 1:
            return np.ones((1, 1))
        return np.diag(stay) + (1.0 - stay)[:, None] * np.asarray(self.switch_probs, dtype=float)

    @property
    def stationary_distribution(self) -> np.ndarray:
        """Long-run share of bars in each regime (left eigenvector of the transition matrix)."""
        vals, vecs = np.linalg.eig(self.transition_matrix.T)
        pi = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
        return pi / pi.sum()



#: The planted market of lessons 04 and 09 (use it with ``seed=0``): strong, frequent motifs. The model's
#: defaults were chosen while looking at this market, so a result on it may flatter them.
PLANTED_MARKET = SyntheticConfig(aftermath_strength=0.8, motif_coverage=0.5)
#: A second planted market that no default was tuned on: shorter and noisier motifs, fewer of them, a weaker
#: and shorter aftermath, and another seed (:data:`UNSEEN_MARKET_SEED`). A claim that memory helps should
#: hold here too.
UNSEEN_MARKET = SyntheticConfig(motif_len=10, motif_noise=0.5, motif_coverage=0.4, aftermath_strength=0.6,
                                aftermath_bars=8)
#: The seed that goes with :data:`UNSEEN_MARKET`.
UNSEEN_MARKET_SEED = 7

@dataclass(frozen=True)
class SyntheticMarket:
    """Synthetic OHLCV bars plus the ground truth that made them.

    Attributes:
        ohlcv: Course-shaped bars (business-day ``DatetimeIndex`` named ``time``; open/high/low/close/volume).
        regimes: Regime name of every bar (index = ``ohlcv.index``).
        regime_names: All regime names, in config order (``regime_codes`` index into it).
        motifs: One row per planted motif: ``motif_id``, ``name``, ``start``/``end`` (first/last motif bar),
            ``start_pos``/``end_pos``, ``direction`` (planted aftermath sign), ``aftermath_end`` (last
            aftermath bar), ``aftermath_return`` (realised log return over (end, aftermath_end]) and
            ``regime`` (at the motif's end).
        motif_bars: Per bar, the ``motif_id`` whose shape covers it, else -1.
        aftermath_bars: Per bar, the ``motif_id`` whose aftermath covers it, else -1.
        motif_names: Motif type names; ``motifs["motif_id"]`` indexes into it.
        config: The configuration used.
        seed: The seed used.
    """

    ohlcv: pd.DataFrame
    regimes: pd.Series
    regime_names: tuple[str, ...]
    motifs: pd.DataFrame
    motif_bars: pd.Series
    aftermath_bars: pd.Series
    motif_names: tuple[str, ...]
    config: SyntheticConfig = field(repr=False)
    seed: int = 0

    def __repr__(self) -> str:
        return (
            f"SyntheticMarket({len(self.ohlcv)} bars {self.ohlcv.index[0].date()}..{self.ohlcv.index[-1].date()}, "
            f"regimes={list(self.regime_names)}, {len(self.motifs)} motifs, seed={self.seed})"
        )

    @property
    def regime_codes(self) -> np.ndarray:
        """Integer regime per bar (position in ``regime_names``): handy for scoring a classifier."""
        lookup = {name: i for i, name in enumerate(self.regime_names)}
        return np.array([lookup[r] for r in self.regimes], dtype=np.int64)

    def regime_summary(self) -> pd.DataFrame:
        """Per regime: share of bars, number of spells, mean spell length, annualised drift and volatility."""
        codes = self.regime_codes
        ret = np.log(self.ohlcv["close"]).diff().to_numpy()
        starts = np.r_[True, codes[1:] != codes[:-1]]
        rows = {}
        for i, name in enumerate(self.regime_names):
            mask = codes == i
            spells = int((starts & mask).sum())
            r = ret[mask & np.isfinite(ret)]
            rows[name] = {
                "share": mask.mean(),
                "spells": spells,
                "mean_spell_bars": mask.sum() / spells if spells else np.nan,
                "ann_return": r.mean() * 252 if len(r) else np.nan,
                "ann_vol": r.std() * np.sqrt(252) if len(r) > 1 else np.nan,
            }
        return pd.DataFrame(rows).T.rename_axis("regime")

    def motif_summary(self) -> pd.DataFrame:
        """Per motif type: count, planted direction, mean realised aftermath return and its sign hit rate."""
        m = self.motifs
        if m.empty:
            return pd.DataFrame(columns=["count", "direction", "mean_aftermath", "hit_rate"])
        grouped = m.groupby("name", sort=False)
        return pd.DataFrame(
            {
                "count": grouped.size(),
                "direction": grouped["direction"].first(),
                "mean_aftermath": grouped["aftermath_return"].mean(),
                "hit_rate": grouped.apply(lambda g: float((np.sign(g["aftermath_return"]) == g["direction"]).mean())),
            }
        )


def _simulate_regimes(cfg: SyntheticConfig, n_bars: int, rng: np.random.Generator) -> np.ndarray:
    """Markov chain path started from the stationary distribution (no burn-in artefact)."""
    P = cfg.transition_matrix
    cum = np.cumsum(P, axis=1)
    cum[:, -1] = 1.0
    codes = np.empty(n_bars, dtype=np.int64)
    codes[0] = rng.choice(len(cfg.regime_names), p=cfg.stationary_distribution)
    u = rng.random(n_bars)
    for t in range(1, n_bars):  # a Markov chain is inherently sequential; 5,000 steps take ~2 ms
        codes[t] = int(np.searchsorted(cum[codes[t - 1]], u[t], side="right"))
    return codes


def _innovations(cfg: SyntheticConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance shocks: Student t rescaled by sqrt((df - 2) / df), or Gaussian."""
    if cfg.tail_df is None:
        return rng.standard_normal(n)
    return rng.standard_t(cfg.tail_df, n) * np.sqrt((cfg.tail_df - 2.0) / cfg.tail_df)


def _place_blocks(n_blocks: int, block: int, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """Random sorted starts of ``n_blocks`` non-overlapping blocks of ``block`` bars inside [lo, hi).

    Chooses distinct "slots" and spreads them by ``block - 1``: every non-overlapping layout is possible
    and no rejection loop is needed.
    """
    span = hi - lo
    n_slots = span - n_blocks * block + n_blocks
    if n_blocks == 0:
        return np.zeros(0, dtype=np.int64)
    slots = np.sort(rng.choice(n_slots, size=n_blocks, replace=False))
    return lo + slots + np.arange(n_blocks) * (block - 1)


def make_synthetic_market(n_bars: int = 5000, seed: int = 0, config: SyntheticConfig | None = None) -> SyntheticMarket:
    """Generate a regime-switching market with planted motifs and return it with its ground truth.

    Four steps, all drawing from one random generator in this order: the regime path, the daily returns,
    the planted motifs (which overwrite some returns) and the OHLCV bars built from the returns.

    Args:
        n_bars: Number of daily (business-day) bars.
        seed: Seed of the only random generator used: same seed, same market.
        config: :class:`SyntheticConfig`; the defaults give roughly 20 years of plausible daily bars with
            about 70 motifs per 5,000 bars.

    Raises:
        ValueError: a bad config (see :class:`SyntheticConfig`) or too few bars for the motifs asked for.
    """
    cfg = config or SyntheticConfig()
    if n_bars < 2:
        raise ValueError(f"n_bars must be >= 2, got {n_bars}.")
    rng = np.random.default_rng(seed)
    vol = np.asarray(cfg.vol, dtype=float)
    drift = np.asarray(cfg.drift, dtype=float)

    codes = _simulate_regimes(cfg, n_bars, rng)
    sigma = vol[codes]
    ret = drift[codes] + sigma * _innovations(cfg, n_bars, rng)
    ret[0] = 0.0  # the first close is the starting price
    starts, types, motif_bars, after_bars = _plant_motifs(cfg, ret, codes, rng)

    index = pd.DatetimeIndex(pd.bdate_range(cfg.start, periods=n_bars), name="time")
    ohlcv, logp = _ohlcv_from_returns(cfg, ret, sigma, index, rng)
    ohlcv.attrs["source"] = f"synthetic:seed={seed}"
    names = np.asarray(cfg.regime_names, dtype=object)
    return SyntheticMarket(
        ohlcv=ohlcv,
        regimes=pd.Series(names[codes], index=index, name="regime").astype(str),
        regime_names=tuple(cfg.regime_names),
        motifs=_motif_table(cfg, starts, types, codes, logp, index),
        motif_bars=pd.Series(motif_bars, index=index, name="motif_id"),
        aftermath_bars=pd.Series(after_bars, index=index, name="aftermath_of"),
        motif_names=tuple(cfg.motifs),
        config=cfg,
        seed=seed,
    )


def _plant_motifs(cfg: SyntheticConfig, ret: np.ndarray, codes: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Overwrite ``ret`` in place with the planted motifs and push each aftermath in its motif's direction.

    Returns the motifs' start bars, their type ids, and per bar the id of the motif (``motif_bars``) and
    of the aftermath (``after_bars``) covering it, -1 where none does.
    """
    n_bars = len(ret)
    vol = np.asarray(cfg.vol, dtype=float)
    L, H = cfg.motif_len, cfg.aftermath_bars
    block = L + H + cfg.min_gap
    n_types = len(cfg.motifs)
    n_motifs = int(round(cfg.motif_coverage * n_bars / (L + H))) if n_types else 0
    lo = 1  # bar 0 has no return
    if n_motifs and (n_bars - lo) - n_motifs * block + n_motifs < n_motifs:
        raise ValueError(
            f"{n_bars} bars cannot hold {n_motifs} motifs of {L}+{H}+{cfg.min_gap} bars "
            f"(motif_coverage={cfg.motif_coverage}). Use more bars, a lower motif_coverage or shorter motifs."
        )
    starts = _place_blocks(n_motifs, block, lo, n_bars, rng)
    # balanced types in random order: each type equally often, independent of the regime
    types = rng.permutation(np.resize(np.arange(n_types), n_motifs)) if n_motifs else np.zeros(0, dtype=np.int64)
    shapes = np.stack([motif_shape(name, L) for name in cfg.motifs]) if n_types else np.zeros((0, L))
    directions = _motif_directions(cfg)
    motif_noise = rng.standard_normal((n_motifs, L))
    motif_bars = np.full(n_bars, -1, dtype=np.int64)
    after_bars = np.full(n_bars, -1, dtype=np.int64)
    for i, (s, m) in enumerate(zip(starts, types)):
        scale = vol[codes[s]]  # the regime where the motif starts sets its size
        ret[s : s + L] = scale * (shapes[m] + cfg.motif_noise * motif_noise[i])
        a0, a1 = s + L, min(s + L + H, n_bars)
        ret[a0:a1] += directions[m] * cfg.aftermath_strength * scale
        motif_bars[s : s + L] = m
        after_bars[a0:a1] = m
    return starts, types, motif_bars, after_bars


def _motif_directions(cfg: SyntheticConfig) -> np.ndarray:
    """The planted direction (+1 up, -1 down) of each motif type of ``cfg``."""
    return np.array([MOTIF_LIBRARY[name][1] for name in cfg.motifs], dtype=float)


def _ohlcv_from_returns(cfg: SyntheticConfig, ret: np.ndarray, sigma: np.ndarray, index: pd.DatetimeIndex,
                        rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Daily bars from the log returns ``ret``: closes, an overnight gap to the open, wicks scaled by the
    regime's volatility ``sigma``, and a volume that rises with volatility and surprise. Returns the bars
    and the log close."""
    n_bars = len(ret)
    vol = np.asarray(cfg.vol, dtype=float)
    logp = np.log(cfg.initial_price) + np.cumsum(ret)
    close = np.exp(logp)
    prev_close = np.exp(np.r_[logp[0], logp[:-1]])
    gap = 0.2 * sigma * rng.standard_normal(n_bars)  # overnight gap: part of the bar's move happens at the open
    gap[0] = 0.0
    open_ = prev_close * np.exp(gap)
    body_hi = np.maximum(open_, close)
    body_lo = np.minimum(open_, close)
    high = body_hi * np.exp(0.5 * sigma * np.abs(rng.standard_normal(n_bars)))
    low = body_lo * np.exp(-0.5 * sigma * np.abs(rng.standard_normal(n_bars)))
    surprise = np.abs(ret) / sigma
    ar = np.empty(n_bars)
    eps = 0.25 * rng.standard_normal(n_bars)
    ar[0] = eps[0]
    for t in range(1, n_bars):  # persistent volume noise (AR(1)), as in real trading activity
        ar[t] = 0.7 * ar[t - 1] + eps[t]
    log_volume = (
        np.log(cfg.base_volume)
        + cfg.volume_vol_beta * np.log(sigma / vol.min())
        + cfg.volume_shock_beta * (surprise - np.sqrt(2 / np.pi))
        + ar
    )
    ohlcv = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": np.round(np.exp(log_volume))},
        index=index,
    ).astype("float64")
    validate_ohlcv(ohlcv, where="make_synthetic_market")
    return ohlcv, logp


def _motif_table(cfg: SyntheticConfig, starts: np.ndarray, types: np.ndarray, codes: np.ndarray,
                 logp: np.ndarray, index: pd.DatetimeIndex) -> pd.DataFrame:
    """The ground truth of the planted motifs, one row each (see :class:`SyntheticMarket`)."""
    L, H, n_bars = cfg.motif_len, cfg.aftermath_bars, len(index)
    names = np.asarray(cfg.regime_names, dtype=object)
    directions = _motif_directions(cfg)
    end_pos = starts + L - 1
    aft_end_pos = np.minimum(end_pos + H, n_bars - 1)
    return pd.DataFrame(
        {
            "motif_id": types.astype(np.int64),
            "name": pd.Series([cfg.motifs[m] for m in types], dtype=str),
            "start": index[starts],
            "end": index[end_pos],
            "start_pos": starts.astype(np.int64),
            "end_pos": end_pos.astype(np.int64),
            "direction": directions[types].astype(np.int64) if len(types) else np.zeros(0, dtype=np.int64),
            "aftermath_end": index[aft_end_pos],
            "aftermath_return": logp[aft_end_pos] - logp[end_pos],
            "regime": pd.Series(names[codes[end_pos]], dtype=str),
        }
    )


def append_market(a: SyntheticMarket, b: SyntheticMarket, *, source: str, motif_id_offset: int = 0,
                  drop_motifs_at_join: bool = False, **fields: Any) -> SyntheticMarket:
    """``b`` continued after ``a``: ``b``'s bar 0 is ``a``'s last bar (make ``b`` with ``start`` at that date
    and one bar more), so prices continue from ``a``'s last close (``b`` is rescaled) and ``b``'s bar 0 is
    dropped. Ground truth follows: motif positions shift to the joined series, motif ids by
    ``motif_id_offset`` (when ``b`` plants other motif types), and ``drop_motifs_at_join`` drops motifs of
    ``b`` that start on the join bar. ``fields`` replace other attributes of the result (``motif_names``...).
    """
    scale = a.ohlcv["close"].iloc[-1] / b.ohlcv["close"].iloc[0]
    b_ohlcv = b.ohlcv.iloc[1:].copy()
    b_ohlcv[["open", "high", "low", "close"]] *= scale
    ohlcv = pd.concat([a.ohlcv, b_ohlcv])
    ohlcv.attrs["source"] = source
    n_before = len(a.ohlcv)
    bm = b.motifs.copy()
    for col in ("start_pos", "end_pos"):
        bm[col] = bm[col] + n_before - 1
    if drop_motifs_at_join:
        bm = bm[bm["start_pos"] >= n_before]
    if motif_id_offset:
        bm["motif_id"] = bm["motif_id"] + motif_id_offset
    idx = ohlcv.index

    def cat(x: pd.Series, y: np.ndarray, name: str) -> pd.Series:
        return pd.Series(np.r_[x.to_numpy(), y[1:]], index=idx, name=name)

    def shift(ids: pd.Series) -> np.ndarray:
        v = ids.to_numpy()
        return np.where(v >= 0, v + motif_id_offset, -1) if motif_id_offset else v

    return replace(a, ohlcv=ohlcv, regimes=cat(a.regimes, b.regimes.to_numpy(), "regime"),
                   motifs=pd.concat([a.motifs, bm], ignore_index=True),
                   motif_bars=cat(a.motif_bars, shift(b.motif_bars), "motif_id"),
                   aftermath_bars=cat(a.aftermath_bars, shift(b.aftermath_bars), "aftermath_of"), **fields)
