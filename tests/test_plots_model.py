"""The architecture figure is drawn from the config, so it says what the model is."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import course_lib as cl  # noqa: E402
from course_lib.plots.model import architecture_boxes  # noqa: E402


def _texts(ax) -> str:
    return " ".join(t.get_text().replace("\n", " ") for t in ax.texts) + " " + ax.get_title()


def test_figure_follows_the_config():
    cfg = cl.MemoryTransformerConfig(d_model=48, n_heads=4, n_layers=3, memory_layers=(1, 2), n_neighbors=12,
                                     temperature=0.25, fusion="joint", seq_len=40)
    ax = cl.plot_architecture(cfg)
    text = " ".join(_texts(ax).split())
    for expected in ("S=40", "D=48", "encoder layer 2", "k=12", "τ starts at 0.25", "joint softmax", "3 layer(s)"):
        assert expected in text, expected
    assert text.count("kNN memory attention") == 2  # layers 1 and 2, not layer 0
    plt.close(ax.figure)


def test_no_memory_boxes_without_memory():
    cfg = cl.MemoryTransformerConfig(use_memory=False)
    assert architecture_boxes(cfg)["memory"] == []
    ax = cl.plot_architecture(cfg)
    text = _texts(ax)
    assert "external memory" not in text and "kNN" not in text and "without memory" in text
    plt.close(ax.figure)


def test_gate_and_blend_are_named_only_when_present():
    gated = architecture_boxes(cl.MemoryTransformerConfig(gate="head", gate_bias=-2.0))
    assert any("head gate, bias -2" in line for line in gated["main"])
    plain = architecture_boxes(cl.MemoryTransformerConfig(fusion="concat", knn_blend=False))
    assert not any("gate" in line or "blend" in line for line in plain["main"])
