"""Plots for lessons 03-04: learning curves, gates, attention over neighbours, memory vs no memory."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "architecture_boxes",
    "plot_architecture",
    "plot_fusion_comparison",
    "plot_gate",
    "plot_gate_by_window",
    "plot_ladder",
    "plot_learning_curves",
    "plot_memory_comparison",
    "plot_neighbour_attention",
    "plot_retrieved_dates",
]


_FUSION_TEXT = {
    "gated": "gated mix: (1 - g)·local + g·memory",
    "concat": "concat: Linear([local; memory])",
    "cross_attention": "cross-attention over {local, memory}",
    "joint": "joint softmax over [window bars; neighbours]",
}


def architecture_boxes(config) -> dict[str, list[str]]:
    """The text of every box of :func:`plot_architecture`, read off a ``MemoryTransformerConfig``.

    ``"main"`` lists the boxes of the local path from input to heads (one per encoder layer), ``"memory"``
    the retrieval path (empty without memory). Kept apart from the drawing so a test can check that the
    figure says what the config says.
    """
    c = config
    mem_ids = set(c.memory_layer_ids)
    main = [
        f"input window x: (B, S={c.seq_len}, F={c.input_dim})",
        f"Conv1d token embedding (kernel {c.conv_kernel}) + sinusoidal positions -> (B, S, D={c.d_model})",
    ]
    for i in range(c.n_layers):
        what = f"local self-attention ({c.n_heads} heads)"
        if i in mem_ids:
            fused = _FUSION_TEXT[c.fusion]
            if c.fusion == "gated":
                fused += f" ({c.gate} gate, bias {c.gate_bias:g})"
            what += f" ⊕ kNN memory attention; {fused}"
        main.append(f"encoder layer {i}: pre-norm {what}; feed-forward {c.d_ff}")
    heads = "heads on the last token: return (MSE), down/flat/up (cross-entropy), position (tanh, utility)"
    if c.use_memory and c.knn_blend:
        heads += "; kNN blend λ mixes the neighbours' outcomes in"
    main.append(heads)
    memory: list[str] = []
    if c.use_memory:
        first = min(mem_ids)
        recent = f" + W_r·(last {c.recent_bars} bars of the input path)" if c.recent_bars else ""
        where = "every position" if c.retrieval == "position" else "the last token"
        memory = [
            f"key q = W_key·LayerNorm(h) of {where} at layer {first}'s input{recent}; key_dim {c.key_dim}",
            f"external memory: key, outcome (return, down/flat/up), available_at; search k={c.n_neighbors}, "
            "as_of = window end t",
            f"cosine attention over the {c.n_neighbors} neighbours: softmax(cos(W_q q, W_k k_j) / τ), "
            f"τ starts at {c.temperature:g}" + (" (learned)" if c.learn_temperature else " (fixed)"),
        ]
    return {"main": main, "memory": memory}


def plot_architecture(config, ax=None, title: str | None = None):
    """Draw the memory-augmented transformer described by ``config`` (a ``MemoryTransformerConfig``).

    The boxes are generated from the config (:func:`architecture_boxes`), so the picture shows the sizes,
    the memory layer(s), the fusion and the number of neighbours of the model you actually built: change the
    config and the figure changes with it.
    """
    from matplotlib.patches import FancyBboxPatch

    boxes = architecture_boxes(config)
    main, memory = boxes["main"], boxes["memory"]
    n = len(main)
    if ax is None:
        _, ax = plt.subplots(figsize=(13, 1.0 + 0.95 * n))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, n - 0.3)
    ax.axis("off")
    ys = [n - 1 - i for i in range(n)]
    mem_ids = set(config.memory_layer_ids)
    main_x, main_w = 0.02, 0.50 if memory else 0.96

    def box(x, y, w, text, color):
        ax.add_patch(FancyBboxPatch((x, y - 0.3), w, 0.6, boxstyle="round,pad=0.01", fc=color, ec="0.3", lw=1))
        ax.text(x + w / 2, y, _wrap(text, int(w * 125)), ha="center", va="center", fontsize=8.5)

    def arrow(x0, y0, x1, y1, color="0.3", style="-|>"):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle=style, color=color, lw=1.3))

    for i, (y, text) in enumerate(zip(ys, main)):
        layer = i - 2
        color = "#f3d9fa" if layer in mem_ids else ("#dbe9f6" if 0 <= layer < config.n_layers else "#eeeeee")
        box(main_x, y, main_w, text, color)
        if i:
            arrow(main_x + main_w / 2, ys[i - 1] - 0.3, main_x + main_w / 2, y + 0.3)
    if memory:
        first_y = ys[2 + min(mem_ids)]
        mem_x, mem_w = 0.58, 0.40
        mem_ys = [first_y + 0.9, first_y, first_y - 0.9] if len(main) > 4 else [first_y + 0.8, first_y, first_y - 0.8]
        for y, text, color in zip(mem_ys, memory, ["#fdebd0", "#fff7c2", "#fdebd0"]):
            box(mem_x, y, mem_w, text, color)
        src = ys[1 + min(mem_ids)]                           # the box whose output is the first memory layer's input
        arrow(main_x + main_w, src - 0.15, mem_x, mem_ys[0], color="tab:purple")       # hidden state -> key
        arrow(mem_x + mem_w / 2, mem_ys[0] - 0.3, mem_x + mem_w / 2, mem_ys[1] + 0.3, color="tab:purple")
        arrow(mem_x + mem_w / 2, mem_ys[1] - 0.3, mem_x + mem_w / 2, mem_ys[2] + 0.3, color="tab:purple")
        for lid in sorted(mem_ids):                                                    # read-out -> each memory layer
            arrow(mem_x, mem_ys[2], main_x + main_w, ys[2 + lid], color="tab:purple")
        if config.knn_blend:                                                           # outcomes -> blend head
            arrow(mem_x + 0.05, mem_ys[1] - 0.3, main_x + main_w, ys[-1] + 0.1, color="tab:orange")
    label = "memory-augmented transformer" if memory else "transformer without memory (use_memory=False)"
    ax.set_title(title or f"{label}: d_model={config.d_model}, {config.n_layers} layer(s), {config.n_heads} heads",
                 fontsize=11)
    return ax


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, max(20, width)))


def plot_learning_curves(history: pd.DataFrame | dict[str, pd.DataFrame], axes=None):
    """Train/val loss and validation direction accuracy per epoch (one history or a dict of named ones)."""
    histories = history if isinstance(history, dict) else {"": history}
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for name, h in histories.items():
        tag = f"{name} " if name else ""
        line = axes[0].plot(h.index, h["train_loss"], label=f"{tag}train")[0]
        if "val_loss" in h:
            axes[0].plot(h.index, h["val_loss"], "--", color=line.get_color(), label=f"{tag}val")
        if "val_direction_accuracy" in h:
            axes[1].plot(h.index, h["val_direction_accuracy"], color=line.get_color(), label=name or "val")
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[1].set(title="validation direction accuracy", xlabel="epoch")
    for ax in axes:
        ax.legend(fontsize=8)
    return axes


def plot_gate(values: np.ndarray | pd.Series, title: str = "gate: share of memory in the fused output", ax=None):
    """Histogram of gate values (0 = local context only, 1 = memory only)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    ax.hist(v, bins=30, range=(0, 1), color="tab:purple", alpha=0.8)
    ax.axvline(v.mean() if len(v) else np.nan, color="k", lw=1, label=f"mean {v.mean():.2f}" if len(v) else None)
    ax.set(title=title, xlabel="gate", ylabel="windows")
    ax.legend()
    return ax


def plot_neighbour_attention(weights: np.ndarray, mask: np.ndarray | None = None, outcomes: np.ndarray | None = None,
                             ax=None, title: str = "attention over retrieved neighbours",
                             order: str = "search rank"):
    """Heatmap: rows are query windows, columns their neighbours; optional outcome colouring.

    ``order`` names how the columns are ordered, for the axis label: ``"search rank"`` (as the bank returned
    them, 1 = closest key) or e.g. ``"attention rank"`` (as ``MemoryTransformerTrainer.neighbours`` sorts
    them, 1 = most attended). ``outcomes`` (same shape) marks each neighbour's subsequent return: '+' or '-'.
    """
    w = np.asarray(weights, dtype=float)
    if mask is not None:
        w = np.where(mask, w, np.nan)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(12, 1 + 0.35 * w.shape[1]), 0.5 + 0.4 * w.shape[0]))
    im = ax.imshow(w, aspect="auto", cmap="viridis")
    plt.colorbar(im, ax=ax, label="weight")
    if outcomes is not None:
        o = np.asarray(outcomes)
        for i, j in zip(*np.nonzero(np.isfinite(w))):
            ax.text(j, i, "+" if o[i, j] > 0 else "-", ha="center", va="center", color="w", fontsize=7)
    ticks = np.arange(0, w.shape[1], max(1, w.shape[1] // 8))
    ax.set_xticks(ticks, [str(j + 1) for j in ticks])  # ranks count from 1
    ax.set(title=title, xlabel=f"neighbour ({order}, 1 = first)", ylabel="query window")
    return ax


def plot_fusion_comparison(table: pd.DataFrame, column: str, ax=None, title: str | None = None):
    """Bar chart of one statistic per fusion strategy (rows of ``table``)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    ax.bar(table.index.astype(str), table[column], color="tab:blue")
    ax.set(title=title or column, ylabel=column)
    ax.tick_params(axis="x", rotation=20)
    return ax


def plot_memory_comparison(per_seed: pd.DataFrame, summary: pd.DataFrame | None = None, subset: str = "", ax=None):
    """Direction accuracy of memory vs no-memory per seed (paired lines), with the mean difference and CI."""
    suffix = f"_{subset}" if subset else ""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    a, b = per_seed[f"acc_local{suffix}"], per_seed[f"acc_memory{suffix}"]
    for seed in per_seed.index:
        ax.plot([0, 1], [a[seed], b[seed]], "o-", color="grey", alpha=0.6)
    ax.plot([0, 1], [a.mean(), b.mean()], "o-", color="tab:red", lw=2.5, label="mean")
    ax.set_xticks([0, 1], ["no memory", "memory"])
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    title = f"direction accuracy{(' (' + subset + ')') if subset else ''}"
    if summary is not None:
        row = summary.loc[subset or "all"]
        title += f"\ndiff {row['diff']:+.3f}, bootstrap 95% CI [{row['boot_ci_low']:+.3f}, {row['boot_ci_high']:+.3f}]"
    ax.set(title=title, ylabel="accuracy")
    ax.legend()
    return ax


def plot_retrieved_dates(close: pd.Series, neighbours: pd.DataFrame, query_times: Sequence, ax=None):
    """Price chart with, for each query day, vertical marks at the past dates the model retrieved."""
    if ax is None:
        _, ax = plt.subplots(figsize=(12, 3.5))
    ax.plot(close.index, close.to_numpy(), color="k", lw=0.8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, t in enumerate(query_times):
        c = colors[i % len(colors)]
        nb = neighbours[neighbours["time"] == t]
        ax.axvline(t, color=c, lw=2, label=f"query {pd.Timestamp(t).date()}")
        for nt in nb["neighbour_time"]:
            ax.axvline(nt, color=c, lw=0.8, alpha=0.7, ls="--")
    ax.set(title="retrieved past windows (dashed) for a few test days (solid)", ylabel="close")
    ax.legend(fontsize=8, loc="upper left")
    return ax


def plot_ladder(summary: pd.DataFrame, subsets: Sequence[str] = ("all",), reference: str = "no_memory",
                title: str = "", axes=None):
    """The ablation ladder as paired differences: one panel per subset, one row per arm (the reference's
    own row left out), the difference in accuracy points with its interval over seeds (thick) and its block
    bootstrap over test windows (thin). Zero is the reference; an arm whose intervals lie right of it beat it."""
    subsets = list(subsets)
    if axes is None:
        _, axes = plt.subplots(1, len(subsets), figsize=(5.2 * len(subsets), 3.6), sharey=True, squeeze=False)
        axes = axes[0]
    arms = [a for a in dict.fromkeys(summary.index.get_level_values(0)) if a != reference]
    y = np.arange(len(arms))[::-1]
    for ax, sub in zip(axes, subsets):
        rows = summary.xs(sub, level=1).loc[arms] * 100
        ax.hlines(y - 0.12, rows["boot_ci_low"], rows["boot_ci_high"], color="tab:blue", lw=1.5,
                  label="over test windows (block bootstrap)")
        ax.hlines(y + 0.12, rows["seed_ci_low"], rows["seed_ci_high"], color="tab:orange", lw=5, alpha=0.8,
                  label="over seeds (t)")
        ax.plot(rows["diff"], y, "o", color="k", ms=5, label="mean difference")
        ax.axvline(0, color="k", lw=0.8, ls=":")
        ax.set_yticks(y, arms)
        n = int(summary.loc[(arms[0], sub), "n"]) if "n" in summary else None
        ax.set(xlabel=f"accuracy minus {reference} (points)", title=f"{title}{': ' if title else ''}{sub}"
               + (f" ({n} windows)" if n else ""))
    axes[0].legend(fontsize=8, loc="lower left")
    return axes


def plot_gate_by_window(gates: pd.DataFrame, start: float, title: str = "gate by window type", ax=None,
                        ylabel: str = "gate (share of memory)"):
    """Mean gate per window group (rows of :func:`course_lib.gate_by_subset`, its contrast row left out), with
    the spread across windows, against the gate's value before training (``start``)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    g = gates[~gates.index.str.contains(" - ")]
    x = np.arange(len(g))
    ax.bar(x, g["mean"], yerr=g["std"], color="tab:purple", alpha=0.75, capsize=4, label="mean ± spread across windows")
    ax.axhline(start, color="k", ls="--", lw=1, label=f"before training ({start:.2f})")
    ax.set_xticks(x, [f"{name}\n({int(n)})" for name, n in zip(g.index, g["n"])])
    lo = min(float((g["mean"] - g["std"]).min()), start)
    hi = max(float((g["mean"] + g["std"]).max()), start)
    pad = max(0.02, 0.15 * (hi - lo))
    ax.set(title=title, ylabel=ylabel, ylim=(max(0.0, lo - pad), min(1.0, hi + pad)))
    # below the axes: the bars fill the panel, so any legend inside it would cover one of them
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return ax
