"""Position sizing: how much to hold, given a direction and how sure we are. Every rule is causal.

The size chosen at the close of bar t may use the signal at t and returns up to and including bar t
(all known at that close), never later ones. The tests change the future and check the past sizes
did not move.

* :func:`agreement_sizing` - the chapter's rule: direction from the model, confidence up when the
  neighbours' outcomes in memory agree with it, halved when they disagree.
* :func:`volatility_target` - scale to a target annual volatility with a trailing volatility estimate,
  annualised with the bar frequency known at t.
* :func:`kelly_fraction` / :func:`continuous_kelly` - (fractional) Kelly bets; :func:`kelly_sizing` - the
  causal sizing stage built on them (trailing mean/variance up to t).
* :func:`cvar_limit` - shrink positions whose trailing expected shortfall exceeds a loss budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics import periods_per_year_to_date

__all__ = [
    "SizingConfig",
    "agreement_sizing",
    "apply_sizing",
    "continuous_kelly",
    "cvar",
    "cvar_limit",
    "kelly_fraction",
    "kelly_sizing",
    "trailing_scale",
    "volatility_target",
]


def _series(x, name: str = "value") -> pd.Series:
    if isinstance(x, pd.Series):
        return x.astype(float)
    return pd.Series(np.asarray(x, dtype=float), name=name)


def _kind(index: pd.Index) -> str:
    """A short name for an index in error messages ("DatetimeIndex", "RangeIndex", ...)."""
    return type(index).__name__


def _align(positions, asset_returns, what: str = "asset_returns") -> tuple[pd.Series, pd.Series]:
    """Positions and the asset returns that feed their trailing estimates, on one index.

    Why this is strict: a silent mismatch (array positions next to time-indexed returns) used to reindex the
    returns onto ``0..n-1``, turn them all NaN, and make the sizers return zeros or never cap. Rules:

    * both indexed by time: aligned by time; the returns may be a *longer* history (their earlier bars warm
      the trailing estimates), cut at the last position, and must cover every position time;
    * same index: used as is;
    * otherwise (an array, a RangeIndex next to a DatetimeIndex, ...): aligned bar by bar *by position*,
      which needs equal lengths; the result takes whichever index is a DatetimeIndex (so the frequency can
      be inferred and the output can go straight into :class:`course_lib.Backtester`);
    * different lengths without two time indexes: ``ValueError`` naming both lengths and index kinds.

    Returns:
        ``(positions, returns)``; ``returns`` ends at the last position and has the positions' index
        type, so ``estimate.reindex(positions.index)`` is exact.
    """
    pos = _series(positions, "position")
    if isinstance(asset_returns, pd.Series):
        r = asset_returns.astype(float)
    else:
        values = np.asarray(asset_returns, dtype=float)
        if values.ndim != 1:
            raise ValueError(f"{what} must be one-dimensional, got shape {values.shape}.")
        r = pd.Series(values, index=pos.index if len(values) == len(pos) else None, name=what)
    if isinstance(r.index, pd.DatetimeIndex) and isinstance(pos.index, pd.DatetimeIndex):
        missing = pos.index.difference(r.index)
        if len(missing):
            raise ValueError(
                f"{what} have no value for {len(missing)} position time(s), first {missing[0]}: pass "
                "returns indexed by the same bars as the positions (a longer history is fine)."
            )
        return pos, r.loc[: pos.index[-1]]
    if r.index.equals(pos.index):
        return pos, r
    if len(r) != len(pos):
        raise ValueError(
            f"cannot align positions ({len(pos)} values, {_kind(pos.index)}) with {what} ({len(r)} values, "
            f"{_kind(r.index)}): pass both as Series indexed by time (the returns may be a longer "
            "history), or arrays of the same length, one value per bar."
        )
    index = r.index if isinstance(r.index, pd.DatetimeIndex) else pos.index
    return pos.set_axis(index), r.set_axis(index)


def trailing_scale(x, min_periods: int = 20) -> pd.Series:
    """Causal typical magnitude of ``x``: root-mean-square of values up to and including t (expanding).

    Used to turn a raw forecast (a log return of ~0.001) into a unit-free strength: ``|x_t| / scale_t``.
    NaN until ``min_periods`` values are seen.
    """
    s = _series(x)
    return np.sqrt((s * s).expanding(min_periods=min_periods).mean())


def _scale_of(x: pd.Series, given, min_periods: int) -> pd.Series:
    if given is None:
        return trailing_scale(x, min_periods)
    if np.isscalar(given):
        return pd.Series(float(given), index=x.index)
    return _series(given).set_axis(x.index)


def agreement_sizing(
    model_signal,
    memory_signal,
    model_scale=None,
    memory_scale=None,
    disagree_factor: float = 0.5,
    max_position: float = 1.0,
    min_periods: int = 20,
) -> pd.DataFrame:
    """Signal x confidence with the chapter's model+memory agreement rule.

    * direction = sign of the model's forecast;
    * strengths ``m = |model| / model_scale`` and ``k = |memory| / memory_scale`` (unit-free; the
      default scales are :func:`trailing_scale`, causal, so early bars with too little history get
      confidence 0);
    * if model and memory point the same way: ``confidence = min(m + k, 1)`` (agreement adds up);
    * otherwise ``confidence = disagree_factor * min(m, 1)`` (trust the model, but less);
    * position = direction x confidence x max_position.

    The chapter applied the rule to raw returns (so confidence was ~0.01 and the strategy barely traded);
    rescaling each input by its own typical size is what makes the rule usable.

    Returns:
        DataFrame with ``signal`` (-1/0/1), ``agree`` (bool), ``confidence`` and ``position``.
    """
    model = _series(model_signal, "model")
    memory = _series(memory_signal, "memory")
    if len(model) != len(memory):
        raise ValueError(f"model ({len(model)}) and memory ({len(memory)}) signals differ in length.")
    memory.index = model.index
    ms = _scale_of(model, model_scale, min_periods)
    ks = _scale_of(memory.fillna(0.0), memory_scale, min_periods)
    m = (model.abs() / ms.where(ms > 0)).fillna(0.0)
    k = (memory.abs() / ks.where(ks > 0)).fillna(0.0)
    direction = np.sign(model).fillna(0.0)
    agree = (np.sign(memory) == direction) & (direction != 0)
    confidence = np.where(agree, np.minimum(m + k, 1.0), disagree_factor * np.minimum(m, 1.0))
    confidence = pd.Series(confidence, index=model.index).where(direction != 0, 0.0)
    return pd.DataFrame(
        {
            "signal": direction,
            "agree": agree,
            "confidence": confidence,
            "position": direction * confidence * max_position,
        }
    )


def volatility_target(
    positions,
    asset_returns,
    target_vol: float = 0.15,
    window: int = 20,
    periods_per_year: float | None = None,
    max_leverage: float = 1.0,
) -> pd.Series:
    """Scale positions so the trailing-volatility forecast of the position is ``target_vol`` a year.

    ``scale_t = target_vol / (std(r_{t-window+1..t}) * sqrt(P_t))``, capped at ``max_leverage``; the
    returns up to bar t are known at t's close, when the position is chosen. Pass the asset's whole
    return history as a time-indexed Series and the estimate is warm from the first position; bars
    without ``window`` earlier returns get size 0 (no estimate, no bet).

    ``P_t`` is ``periods_per_year`` when given, else inferred from the return timestamps up to bar t
    only (:func:`course_lib.periods_per_year_to_date`): bars with another spacing arriving later (a
    venue that starts trading at weekends) do not resize earlier bars.
    """
    pos, r = _align(positions, asset_returns)
    if periods_per_year is None:
        if not isinstance(r.index, pd.DatetimeIndex):
            raise ValueError("periods_per_year is required without a DatetimeIndex.")
        p = pd.Series(periods_per_year_to_date(r.index), index=r.index)
    else:
        p = float(periods_per_year)
    vol = (r.rolling(window, min_periods=window).std() * np.sqrt(p)).reindex(pos.index)
    scale = (target_vol / vol.where(vol > 0)).clip(upper=max_leverage).fillna(0.0)
    return (pos * scale).clip(-max_leverage, max_leverage).rename("position")


def kelly_fraction(p_win, win_loss_ratio, fraction: float = 0.25, cap: float = 1.0):
    """Fractional Kelly for a bet that wins ``b`` per unit with probability ``p``: ``f* = p - (1-p)/b``.

    Full Kelly maximises long-run growth only if ``p`` and ``b`` are exactly right; with estimated
    inputs it over-bets badly, which is why practitioners use a fraction (Kelly/4 by default).
    Negative edges give 0 (do not bet), results are capped at ``cap``. Works on scalars and arrays.
    """
    p = np.asarray(p_win, dtype=float)
    b = np.asarray(win_loss_ratio, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = p - (1.0 - p) / b
    out = np.clip(np.nan_to_num(f * fraction, nan=0.0), 0.0, cap)
    return float(out) if out.ndim == 0 else out


def continuous_kelly(expected_return, variance, fraction: float = 0.25, cap: float = 1.0):
    """Kelly leverage for a continuous return: ``fraction * mu / sigma^2``, clipped to ``[-cap, cap]``."""
    mu = np.asarray(expected_return, dtype=float)
    var = np.asarray(variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(var > 0, fraction * mu / var, 0.0)
    out = np.clip(np.nan_to_num(f), -cap, cap)
    return float(out) if out.ndim == 0 else out


def kelly_sizing(
    positions,
    asset_returns,
    fraction: float = 0.5,
    window: int = 250,
    min_periods: int = 60,
    cap: float = 1.0,
    basis: str = "strategy",
) -> pd.Series:
    """Fractional Kelly as a causal sizing stage: scale each position by a trailing Kelly leverage.

    The Kelly leverage of a return stream is ``mu / sigma^2`` (:func:`continuous_kelly`); we estimate
    ``mu`` and ``sigma^2`` (sample variance) over the last ``window`` bars *up to and including t* - all
    known at t's close - and bet ``fraction`` of it (half Kelly by default: estimated edges are noisy and
    full Kelly over-bets them), capped at ``cap``.

    * ``basis="strategy"`` (default): the stream is the strategy's own gross return, ``pos[t-1] * r[t]``
      (the input positions, held as the :class:`course_lib.Backtester` holds them, forward-filled between
      decisions). ``size_t = pos_t * max(kelly_t, 0)``: a strategy whose trailing edge is negative gets 0,
      it is not turned around (that would be another strategy).
    * ``basis="asset"``: the stream is the asset's return taken in the signal's direction,
      ``sign(pos_t) * r``; its trailing history may start before the first position (pass a longer
      time-indexed Series and the estimate is warm from the first bar).

    Warm-up: bars with fewer than ``min_periods`` returns in the window get size 0 (no estimate, no bet),
    as in :func:`volatility_target`.

    Returns:
        The sized positions, in ``[-cap, cap]``.
    """
    if not fraction > 0:
        raise ValueError(f"fraction must be > 0 (0.5 = half Kelly), got {fraction}.")
    if not cap > 0:
        raise ValueError(f"cap must be > 0 (the largest |position|), got {cap}.")
    if window < 2 or not 2 <= min_periods <= window:
        raise ValueError(
            f"need window >= 2 and 2 <= min_periods <= window (a variance needs two returns), "
            f"got window={window}, min_periods={min_periods}."
        )
    if basis not in ("strategy", "asset"):
        raise ValueError(f"basis must be 'strategy' or 'asset', got {basis!r}.")
    pos, r = _align(positions, asset_returns)
    if basis == "strategy":
        grid = r.loc[pos.index[0] :]
        held = pos.reindex(grid.index).ffill().shift(1)  # the position that earned each bar
        stream = held * grid
    else:
        stream = r
    mean = stream.rolling(window, min_periods=min_periods).mean().reindex(pos.index)
    var = stream.rolling(window, min_periods=min_periods).var().reindex(pos.index)
    direction = np.sign(pos)
    if basis == "asset":
        mean = mean * direction
    ok = (mean.notna() & var.notna()).to_numpy()
    lev = continuous_kelly(mean.fillna(0.0).to_numpy(), var.fillna(0.0).to_numpy(), fraction, cap)
    lev = np.where(ok, np.maximum(np.atleast_1d(lev), 0.0), 0.0)
    return (pos * lev).clip(-cap, cap).rename("position")


def cvar(returns, alpha: float = 0.95) -> float:
    """Historical CVaR (expected shortfall): the mean loss in the worst ``1 - alpha`` share of bars.

    Reported as a positive loss fraction (0.03 = on the worst 5% of bars you lose 3% on average).
    """
    r = np.sort(np.asarray(returns, dtype=float)[np.isfinite(np.asarray(returns, dtype=float))])
    if len(r) == 0:
        return float("nan")
    k = max(1, int(math.ceil(len(r) * (1 - alpha))))
    return float(max(0.0, -r[:k].mean()))


#: Window elements partitioned at once by :func:`_rolling_tail_mean` (4M floats = 32 MB per copy).
_TAIL_CHUNK_ELEMENTS = 1 << 22


def _rolling_tail_mean(r: np.ndarray, window: int, k: int, lower: bool) -> np.ndarray:
    """Trailing mean of the ``k`` lowest (negated) or highest values of each ``window``-bar window.

    ``np.partition`` copies the windows it sorts, so partitioning the whole sliding-window view at once
    needs ``n * window`` floats (1M bars x 250 = 2 GB). Rows are processed in chunks of about
    :data:`_TAIL_CHUNK_ELEMENTS` values instead; each row is partitioned and averaged on its own, so the
    result is identical to the one-shot version.
    """
    out = np.full(len(r), np.nan)
    if len(r) < window:
        return out
    views = np.lib.stride_tricks.sliding_window_view(r, window)
    step = max(1, _TAIL_CHUNK_ELEMENTS // window)
    target = out[window - 1 :]
    for lo in range(0, len(views), step):
        block = views[lo : lo + step]
        if lower:
            target[lo : lo + step] = -np.partition(block, k - 1, axis=1)[:, :k].mean(axis=1)
        else:
            target[lo : lo + step] = np.partition(block, window - k, axis=1)[:, window - k :].mean(axis=1)
    return out


def cvar_limit(
    positions,
    asset_returns,
    limit: float = 0.02,
    alpha: float = 0.95,
    window: int = 250,
) -> pd.Series:
    """Cap each position so its trailing one-bar CVaR stays within ``limit`` (a loss budget per bar).

    For a long the tail is the asset's worst returns, for a short its best ones; the trailing CVaR
    of that side over the last ``window`` bars (up to and including t) times ``|position|`` must not
    exceed ``limit``, else the position is shrunk to meet it. Bars without a full window keep their
    size (no estimate yet: the caller's other limits still apply).
    """
    pos, r = _align(positions, asset_returns)
    values = np.nan_to_num(r.to_numpy(dtype=float))
    k = max(1, int(math.ceil(window * (1 - alpha))))
    p = pos.to_numpy()

    def side(lower: bool) -> np.ndarray:
        if not (p >= 0 if lower else p < 0).any():  # e.g. long-only: the short side's tail is not needed
            return np.full(len(p), np.nan)
        tail = _rolling_tail_mean(values, window, k, lower=lower)
        return pd.Series(tail, index=r.index).reindex(pos.index).to_numpy()

    tail = np.where(p >= 0, side(lower=True), side(lower=False))
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = np.where(np.isfinite(tail) & (tail > 0), limit / tail, np.inf)
    sized = np.sign(p) * np.minimum(np.abs(p), cap)
    return pd.Series(sized, index=pos.index, name="position")


@dataclass(frozen=True)
class SizingConfig:
    """A sizing pipeline applied after the signal: fractional Kelly, volatility targeting, a CVaR cap, a clip.

    ``kelly_fraction=None`` / ``target_vol=None`` / ``cvar_limit=None`` switch a stage off (all are off by
    default, so the pipeline is then just the clip to ``max_position``). Kelly comes first because its
    ``basis="strategy"`` estimate must see the raw signal's track record, not an already-resized one.
    """

    kelly_fraction: float | None = None
    kelly_window: int = 250
    kelly_min_periods: int = 60
    kelly_basis: str = "strategy"
    target_vol: float | None = None
    vol_window: int = 20
    cvar_limit: float | None = None
    cvar_alpha: float = 0.95
    cvar_window: int = 250
    max_position: float = 1.0


def apply_sizing(
    positions: pd.Series,
    asset_returns: pd.Series,
    config: SizingConfig | None = None,
    periods_per_year: float | None = None,
) -> pd.Series:
    """Run :class:`SizingConfig`'s stages on raw positions (each causal, so the chain is causal).

    ``periods_per_year`` annualises the volatility target; None infers it at each bar from the
    timestamps up to that bar (see :func:`volatility_target`).
    """
    cfg = config or SizingConfig()
    out, _ = _align(positions, asset_returns)
    if cfg.kelly_fraction is not None:
        out = kelly_sizing(
            out, asset_returns, cfg.kelly_fraction, cfg.kelly_window, cfg.kelly_min_periods,
            cfg.max_position, cfg.kelly_basis,
        )  # fmt: skip
    if cfg.target_vol is not None:
        out = volatility_target(
            out, asset_returns, cfg.target_vol, cfg.vol_window, periods_per_year, cfg.max_position
        )
    if cfg.cvar_limit is not None:
        out = cvar_limit(out, asset_returns, cfg.cvar_limit, cfg.cvar_alpha, cfg.cvar_window)
    return out.clip(-cfg.max_position, cfg.max_position)
