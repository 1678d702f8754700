"""Small shared helpers: reproducible seeding, device choice, atomic file writes, and the two things every
lesson does at its end: report computed results as prose, print the versions it ran with."""

from __future__ import annotations

import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_path", "fastest_ms", "print_versions", "seed_everything", "select_device", "show_code", "show_markdown",
    "show_table", "versions",
]


def seed_everything(seed: int = 42, deterministic: bool = True) -> None:
    """Seed Python, NumPy and PyTorch so CPU runs repeat exactly.

    ``deterministic=True`` also asks PyTorch for deterministic kernels where they exist (``warn_only`` so a
    GPU op without a deterministic version does not crash a lesson).
    """
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def select_device(prefer: str = "auto"):
    """``"auto"`` picks cuda, then Apple mps, then cpu; any explicit name is returned as a torch.device."""
    import torch

    if prefer != "auto":
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path in the target's folder; on success rename it over ``path`` in one step.

    If the block raises, the temporary file is removed and any existing file at ``path`` is untouched, so
    an interrupted save can never leave a half-written artefact behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # the bytes reach the disk before the rename makes them the file
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


_VERSIONED = ("numpy", "pandas", "torch", "faiss-cpu", "scipy", "scikit-learn", "hmmlearn", "statsmodels",
              "matplotlib")


def versions() -> dict[str, str]:
    """Python, the course's core libraries and the compute device, as printed at the end of each lesson."""
    import platform
    from importlib import metadata

    found = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    try:
        import torch

        found["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        found["cpu threads"] = str(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return found


def print_versions() -> None:
    """Print :func:`versions` one per line: a reader comparing numbers with yours needs these."""
    for name, value in versions().items():
        print(f"{name:>12}: {value}")


def show_markdown(text: str) -> None:
    """Show Markdown built from computed values: rendered in Jupyter, plain text elsewhere.

    Lessons report every measured result this way (an f-string over the numbers the cell just computed),
    so the prose can never disagree with the run the reader is looking at.
    """
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython comes with the lab extra
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Markdown(text))


def show_table(table, index_name: str | None = None, column: str = "definition",
               significant: int | None = None) -> None:
    """Show a table in full: no cell cut with "...", no rows or columns elided.

    pandas cuts text cells at 50 characters and long frames in the middle, which is right for data and wrong
    for a table a reader must read to the end (definitions, a verdict table). ``table`` is a DataFrame, a
    Series, or a mapping such as ``course_lib.FEATURE_DESCRIPTIONS`` (shown as one ``column`` indexed by
    ``index_name``). ``significant``: show every float with that many significant digits instead of a fixed
    number of decimals (a loss of 0.000123 would round to a constant 0.0001). Rendered in Jupyter, printed
    elsewhere.
    """
    import pandas as pd

    if isinstance(table, dict):
        table = pd.Series(table, name=column)
    if isinstance(table, pd.Series):
        table = table.to_frame(table.name or column)
    if index_name is not None:
        table = table.rename_axis(index_name)
    if significant is not None:
        table = table.map(lambda v: f"{v:.{significant}g}" if isinstance(v, float) else v)
    options = ("display.max_colwidth", None, "display.max_rows", None, "display.max_columns", None,
               "display.expand_frame_repr", False)  # text form: one line per row, never wrapped in blocks
    with pd.option_context(*options):
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython comes with the lab extra
            print(table.to_string())
            return
        if get_ipython() is None:
            print(table.to_string())
        else:
            display(table)  # the HTML and text forms are rendered now, inside the options


def show_code(fn, *fragments: str) -> None:
    """Print the line of ``fn``'s source that contains each fragment: the code behind an equation in a lesson.

    Raises ``LookupError`` naming the function and the fragment when a line is gone, so a lesson whose text
    no longer matches the library fails loudly instead of printing nothing.
    """
    import inspect

    lines = inspect.getsource(fn).splitlines()
    for fragment in fragments:
        hits = [line.strip() for line in lines if fragment in line]
        if not hits:
            raise LookupError(f"{fn.__qualname__} has no line containing {fragment!r}: the lesson quotes code the "
                              "library no longer has; update the lesson's show_code call.")
        print(f"{fn.__qualname__}:  {hits[0]}")


def fastest_ms(calls, repeats: int = 7) -> dict[str, float]:
    """Milliseconds of the fastest of ``repeats`` runs of each call in ``calls`` (a mapping name -> function).

    Every call runs once to warm up; then the calls are interleaved round by round, so a machine whose load
    drifts during the measurement charges the drift to all of them alike, not to whichever ran last.
    """
    import time

    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * min(t) for name, t in times.items()}
