"""Axis helpers shared by the course's figures: log scales that read like prices, not like 10^3."""

from __future__ import annotations

__all__ = ["plain_log_scale"]


def _plain(x: float) -> str:
    """1,200 / 850 / 2 / 1.5 / 0.25: thousands separated, no exponent, no trailing zeros."""
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def plain_log_scale(ax, axis: str = "y"):
    """Put ``axis`` ("x" or "y") of ``ax`` on a log scale whose tick labels are plain numbers.

    matplotlib labels a log axis 10^3, 2x10^3...: right for orders of magnitude, hard to read for a price that
    moves between 700 and 1,600, or a growth of 1 between 0.5 and 3. Here every labelled tick is written out,
    and the minor ticks (2, 3, 5...) get labels too when the axis spans less than about two decades, so a
    narrow range is never left with a single label; below a factor of 10 between the axis ends (call it after
    plotting), evenly spaced round numbers replace the log ticks. Returns ``ax``.
    """
    from matplotlib import ticker

    class PlainLogFormatter(ticker.LogFormatter):
        def _num_to_string(self, x, vmin, vmax):  # matplotlib's hook: the text of one tick
            return _plain(x)

    getattr(ax, f"set_{axis}scale")("log")
    target = getattr(ax, f"{axis}axis")
    lo, hi = getattr(ax, f"get_{axis}lim")()
    if lo > 0 and hi / lo < 10:
        # less than a decade (a growth of 1 between 0.8 and 1.2, a price between 700 and 3,000): log ticks would leave
        # one to three labels, so place evenly spaced round numbers instead (on a log axis a little uneven)
        target.set_major_locator(ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        target.set_major_formatter(ticker.FuncFormatter(lambda x, _pos: _plain(x)))
        target.set_minor_formatter(ticker.NullFormatter())
        return ax
    target.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    target.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    return ax
