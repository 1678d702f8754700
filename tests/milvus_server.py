"""A throw-away Milvus server for the tests and benchmarks: the standalone server of the PyPI package
``milvus`` (pinned in tests/milvus-server-requirements.txt), in its own venv under build/milvus-server.

    python tests/milvus_server.py run -- pytest -n 2 tests   # what `make test` does
    python tests/milvus_server.py serve                      # a server for your own runs; Ctrl+C stops it

``run`` starts one server with a fresh data folder, runs the command with ``COURSE_MILVUS_URI`` set to the
server (``http://127.0.0.1:<port>``, the port the server chose: 19530 or the next free one), stops the server
and deletes its data folder whatever the command did (test failures, Ctrl+C, an exception), and exits with the
command's status (with ``COURSE_MILVUS_URI`` already set, it uses that server and starts none). When no
server can be started (no wheel for this platform, no network for the first install,
a server that never gets healthy) the command still runs, with ``COURSE_MILVUS_SKIP`` set to the reason: the
server tests skip with it. One server for the whole run, so ``pytest -n 2`` workers share it.

Costs (measured on 2 CPU cores): the first run creates the venv and installs a 58 MB wheel; each start takes
about 10 s and ~250 MB of RAM idle (500 MB with 1e5 entries, up to 2 GB with 1e6).

The server runs under a small driver (this file, ``_serve``, inside the server's venv) that stops it on
SIGINT/SIGTERM or when its parent dies; the server process also gets SIGKILL from the kernel if the driver
dies (Linux ``PR_SET_PDEATHSIG``), so no server outlives the run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / "build" / "milvus-server"  # the venv, the unpacked server binary, one data folder per run
REQUIREMENTS = Path(__file__).with_name("milvus-server-requirements.txt")
URI_VAR, SKIP_VAR = "COURSE_MILVUS_URI", "COURSE_MILVUS_SKIP"
START_TIMEOUT = 120  # seconds until /healthz answers OK
STOP_GRACE = 10  # seconds the server gets to stop after SIGTERM before SIGKILL


def _die_with_parent(sig: int = signal.SIGKILL):
    """A preexec_fn: the child gets ``sig`` when the process that started it dies (Linux only)."""

    def set_pdeathsig() -> None:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    return set_pdeathsig if sys.platform.startswith("linux") else None


# ----------------------------------------------------------------------------------- in the course's Python
def _venv_python() -> Path:
    return HOME / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> Path:
    """The server venv's python, created and filled from the pinned requirements on first use."""
    py, stamp = _venv_python(), HOME / ".installed"
    want = REQUIREMENTS.read_text()
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(HOME)], check=True, capture_output=True, text=True)
    done = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                           str(REQUIREMENTS)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip install -r {REQUIREMENTS.name} failed (no wheel of the Milvus server for this "
                           f"platform, or no network): {done.stderr.strip()[-400:]}")
    stamp.write_text(want)
    return py


class Server:
    """One server with a fresh data folder: ``with Server() as s: s.uri``. Stopped and deleted on exit."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.data: Path | None = None
        self.uri = ""

    def start(self) -> str:
        py = ensure_venv()
        (HOME / "runs").mkdir(parents=True, exist_ok=True)
        self.data = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=HOME / "runs"))
        ready = self.data / "ready.json"
        self.proc = subprocess.Popen([str(py), str(Path(__file__).resolve()), "_serve", str(self.data), str(ready)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.data / "driver.log", "w"),
                                     preexec_fn=_die_with_parent(signal.SIGTERM))
        deadline = time.monotonic() + START_TIMEOUT + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.data / "driver.log").read_text()[-600:]
                self.stop()
                raise RuntimeError(f"the Milvus server did not start: {log.strip() or 'no output'}")
            time.sleep(0.2)
        self.uri = json.loads(ready.read_text())["uri"]
        return self.uri

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_GRACE + 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.data is not None:
            shutil.rmtree(self.data, ignore_errors=True)  # dropped collections stay on disk: never reuse it
            self.data = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run(cmd: list[str]) -> int:
    """Run ``cmd`` with a server's URI in ``COURSE_MILVUS_URI`` (or the reason there is none in
    ``COURSE_MILVUS_SKIP``); the server is stopped and its data deleted whatever happens."""
    env = dict(os.environ)
    if env.get(URI_VAR):  # a server of your own: use it, start none
        print(f"[milvus_server] using the Milvus server at {env[URI_VAR]} ({URI_VAR})", flush=True)
        return subprocess.call(cmd, env=env)
    server = Server()
    stop_now = []

    def on_signal(sig, _frame):  # stop the server first, then leave as the signal asked
        stop_now.append(sig)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            t0 = time.monotonic()
            env[URI_VAR] = server.start()
            env.pop(SKIP_VAR, None)
            print(f"[milvus_server] Milvus server at {server.uri} (started in {time.monotonic() - t0:.0f} s)",
                  flush=True)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            env.pop(URI_VAR, None)
            env[SKIP_VAR] = str(exc).replace("\n", " ")[:500]
            print(f"[milvus_server] no Milvus server, its tests will skip: {env[SKIP_VAR]}", flush=True)
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130 if not stop_now else 128 + int(stop_now[0])
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)


def serve() -> int:
    def leave(_sig, _frame):
        raise KeyboardInterrupt

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # also when started in the background (SIGINT ignored)
        signal.signal(s, leave)
    with Server() as server:
        print(f"Milvus server at {server.uri}  (data {server.data}; Ctrl+C stops it and deletes the data)",
              flush=True)
        print(f"    export {URI_VAR}={server.uri}", flush=True)
        try:
            while server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


# ----------------------------------------------------------------------------------- in the server's venv
def _serve(data: str, ready: str) -> int:
    """Start the server of the ``milvus`` package with ``data`` as its folder, write ``ready`` once healthy,
    and stop it on SIGINT/SIGTERM or when the parent dies."""
    import milvus

    base = Path(data)
    shared_bin = HOME / f"bin-{milvus.__version__}"  # unpacked once (~1 s per MB of lzma), shared by all runs
    if not (shared_bin / "milvus").exists():
        tmp = Path(tempfile.mkdtemp(dir=HOME))
        milvus._initialize_data_files(str(tmp))
        try:
            os.rename(tmp / "bin", shared_bin)
        except OSError:
            pass  # another run unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    os.symlink(shared_bin, base / "bin")  # the md5 stamps there make start() skip the unpacking

    server = milvus.MilvusServer(wait_for_started=False)
    server.set_base_dir(str(base))
    real_popen = subprocess.Popen
    subprocess.Popen = lambda *a, **kw: real_popen(*a, preexec_fn=_die_with_parent(), start_new_session=False, **kw)
    try:
        server.start()  # picks free ports (19530 or the next free one), writes the config, starts `milvus run`
    finally:
        subprocess.Popen = real_popen
    proc = server.server_proc
    stop = []
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda sig, _f: stop.append(sig))
    parent = os.getppid()
    health = f"http://127.0.0.1:{server.webservice_port}/healthz"
    deadline = time.monotonic() + START_TIMEOUT
    healthy = False
    while not stop and proc.poll() is None and time.monotonic() < deadline and not healthy:
        try:
            with urllib.request.urlopen(health, timeout=2) as resp:
                healthy = b"OK" in resp.read()
        except OSError:
            time.sleep(0.2)
    if healthy:
        uri = f"http://127.0.0.1:{server.listen_port}"
        Path(ready + ".tmp").write_text(json.dumps({"uri": uri, "health": health, "pid": proc.pid}))
        os.replace(ready + ".tmp", ready)
        while not stop and proc.poll() is None and os.getppid() == parent:
            time.sleep(0.5)
    else:
        print(f"no healthy server after {START_TIMEOUT} s (exit code {proc.poll()}); logs in {base / 'logs'}:",
              file=sys.stderr)
        for log in sorted((base / "logs").glob("*.log")):
            print(log.read_text(errors="replace")[-300:], file=sys.stderr)
    if proc.poll() is None:
        proc.terminate()  # `milvus run standalone` stops cleanly on SIGTERM
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for fd in server.proc_fds.values():
        fd.close()
    server.proc_fds.clear()
    server.server_proc = None  # stopped here: nothing left for the package's own stop() at exit
    if healthy:  # the data are never reused (also when the parent died before it could delete them)
        shutil.rmtree(base, ignore_errors=True)
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        return _serve(*argv[1:3])
    if argv[:1] == ["serve"]:
        return serve()
    if argv[:1] == ["run"] and "--" in argv and argv[argv.index("--") + 1:]:
        return run(argv[argv.index("--") + 1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
