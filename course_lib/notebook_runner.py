"""Execute the course's notebooks in order with papermill (used by ``make course`` and the tests).

Each notebook has one cell tagged ``parameters`` holding the full-size defaults; a notebook's metadata may
hold ``course.test_parameters``, the small values the test suite injects so CI stays fast. Executed copies
(and optionally HTML) go to an output folder, never over the committed notebooks.

Usage: ``python -m course_lib.notebook_runner --out build/course --html [--small] [names...]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["REPO_URL", "colab_url"]

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("notebooks", "exercises", "solutions")
#: The course's public repository: the one place that names it. Every notebook's Colab badge and setup cell
#: (which clones it on Colab) use this URL, and tests/test_lesson_text.py checks that they do.
REPO_URL = "https://github.com/memory-transformers-course/course"


def colab_url(path: str, branch: str = "main") -> str:
    """The "Open in Colab" address of a notebook, ``path`` relative to the repository root
    (e.g. ``"notebooks/01_data_preparation.ipynb"``): Colab opens it straight from :data:`REPO_URL`."""
    repo = REPO_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{repo}/blob/{branch}/{path.lstrip('/')}"


def discover(folders: tuple[str, ...] = FOLDERS, root: Path = ROOT) -> list[Path]:
    """All committed notebooks, lesson order first (01_..., 02_...), then folder order."""
    found = [p for folder in folders for p in sorted((root / folder).glob("*.ipynb"))]
    return sorted(found, key=lambda p: (p.stem, folders.index(p.parent.name)))


def small_parameters(path: Path) -> dict:
    """The small parameters stored in the notebook's metadata under ``course.test_parameters``."""
    meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    return dict(meta.get("course", {}).get("test_parameters", {}))


def output_name(path: Path) -> str:
    return f"{path.parent.name}__{path.name}"


def local_kernel_manager():
    """The kernel manager class the runner uses: jupyter_client's default, talking to the kernel over local IPC
    sockets (files in Jupyter's runtime folder) instead of TCP ports on localhost.

    With TCP, every kernel start logs ipykernel's "Kernel is running over TCP without encryption" warning (once
    per notebook of ``make course``), and rightly: any local user could connect to the ports. IPC sockets are
    protected by file permissions, so there is nothing to warn about. Windows has no IPC transport: TCP stays.
    The shutdown of a finished notebook's kernel sends no interrupt (see ``QuietShutdownKernelManager``).
    """
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    class QuietShutdownKernelManager(AsyncKernelManager):
        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts the kernel (SIGINT) before every shutdown, in case code still runs. Here
            # the notebook has finished, so that signal can only land inside the kernel's own message loop, which
            # logs "KeyboardInterrupt caught in kernel." into the make course output. Shutdown alone suffices.
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    if sys.platform == "win32":  # pragma: no cover - no IPC transport on Windows
        return QuietShutdownKernelManager

    class LocalKernelManager(QuietShutdownKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

    return LocalKernelManager


def execute(path: Path, out_dir: Path, parameters: dict | None = None, timeout: int = 1800) -> Path:
    """Run one notebook with papermill from its own folder (so relative paths behave as in Jupyter)."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / output_name(path)
    pm.execute_notebook(
        str(path),
        str(target),
        parameters=parameters or {},
        cwd=str(path.parent),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=timeout,
        kernel_manager_class=local_kernel_manager(),
    )
    return target


def to_html(notebook: Path) -> Path:
    import nbconvert
    import nbformat

    html, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    target.write_text(html, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="only notebooks whose file name contains one of these")
    parser.add_argument("--out", default="build/course", help="output folder (default: build/course)")
    parser.add_argument("--html", action="store_true", help="also write an HTML copy of each executed notebook")
    parser.add_argument("--small", action="store_true", help="inject the small test parameters (quick run)")
    parser.add_argument("--folders", default="notebooks", help="comma-separated: notebooks,exercises,solutions")
    args = parser.parse_args(argv)
    folders = tuple(f.strip() for f in args.folders.split(",") if f.strip())
    unknown = [f for f in folders if f not in FOLDERS]
    if unknown:
        parser.error(f"unknown folder(s) {unknown}; choose from {FOLDERS}")
    paths = [p for p in discover(folders) if not args.names or any(n in p.name for n in args.names)]
    if not paths:
        parser.error("no notebook matched")
    out_dir = Path(args.out).resolve()
    for path in paths:
        start = time.perf_counter()
        params = small_parameters(path) if args.small else {}
        executed = execute(path, out_dir, params)
        extra = f" + {to_html(executed).name}" if args.html else ""
        print(f"{path.relative_to(ROOT)} -> {executed}{extra} ({time.perf_counter() - start:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
