"""``critpath demo``: the quickstart notebook as a web page, from any directory.

Voilà (``pip install 'critpath-widgets[demo]'``) runs ``01_quickstart.ipynb`` and shows
its outputs without code cells; without Voilà (or with ``--lab``) JupyterLab opens the
notebook instead. The server runs in the current interpreter, bound to 127.0.0.1 on a
free port (or ``--port N``), with a random token in the printed URL, and works on a
copy of the notebook in a temporary folder (removed on exit), so nothing is written
beside the installed package or in the current directory.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CritpathError

NOTEBOOK = "01_quickstart.ipynb"
HOST = "127.0.0.1"
#: how long the server may take to listen on its port
START_TIMEOUT_S = 120.0
INSTALL_HINT = "pip install 'critpath-widgets[demo]'"


class DemoError(CritpathError):
    """``critpath demo`` cannot start: no front end installed, a busy port, a server
    that exited."""


@dataclass
class DemoServer:
    """A running demo server: its process, URL, front end and temporary folder."""

    proc: subprocess.Popen
    url: str
    frontend: str  # "voila" or "lab"
    folder: Path

    def stop(self) -> None:
        """Terminate the server (it shuts its kernels down), then remove the folder."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported in this interpreter (without importing it)."""
    return importlib.util.find_spec(module) is not None


def choose_frontend(lab: bool = False) -> str:
    """``"voila"`` when installed (and ``lab`` is false), else ``"lab"``; DemoError if
    neither Voilà nor JupyterLab is installed."""
    if not lab and installed("voila"):
        return "voila"
    if installed("jupyterlab"):
        return "lab"
    if lab:
        raise DemoError("--lab needs JupyterLab, which is not installed: pip install jupyterlab")
    raise DemoError(
        f"critpath demo needs Voilà or JupyterLab, and neither is installed: {INSTALL_HINT}"
    )


def pick_port(port: int = 0, host: str = HOST) -> int:
    """``port`` if it is free on ``host``, or a free port chosen by the system for 0."""
    if not 0 <= port <= 65535:
        raise DemoError(f"--port {port}: a port is 0 (any free one) to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise DemoError(
                f"--port {port}: {host}:{port} is in use ({err.strerror}); "
                "give another port, or --port 0 for any free one"
            ) from None
        return int(s.getsockname()[1])


def server_command(
    frontend: str, notebook: str, port: int, token: str, python: str = sys.executable
) -> tuple[list[str], str]:
    """The command line that serves ``notebook`` (a name in the server's folder) and the
    URL to open."""
    base = f"http://{HOST}:{port}"
    if frontend == "voila":
        cmd = [
            python,
            "-m",
            "voila",
            notebook,
            f"--port={port}",
            "--no-browser",
            f"--Voila.ip={HOST}",
            "--Voila.port_retries=0",
            f"--token={token}",
            "--Voila.log_level=WARN",
        ]
        return cmd, f"{base}/?token={token}"
    cmd = [
        python,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ip={HOST}",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        "--ServerApp.log_level=WARN",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # JupyterLab refuses root otherwise (containers)
    return cmd, f"{base}/lab/tree/{notebook}?token={token}"


def _wait_listening(proc: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DemoError(f"the demo server exited with code {proc.returncode} (see above)")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            if s.connect_ex((HOST, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise DemoError(f"the demo server did not listen on {HOST}:{port} in {timeout:.0f} s")
        time.sleep(0.2)


def kernel_env(folder: Path, python: str = sys.executable) -> dict[str, str]:
    """The server's environment: a ``python3`` kernel spec of this very Python, first on
    ``JUPYTER_PATH`` (it wins over a user-wide ``python3`` spec of another environment,
    which would lack critpath_widgets), written under ``folder/.kernels`` (hidden)."""
    spec = folder / ".kernels" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (critpath demo)",
                "language": "python",
            }
        ),
        encoding="utf-8",
    )
    env = dict(os.environ)
    rest = env.get("JUPYTER_PATH")
    env["JUPYTER_PATH"] = os.pathsep.join([str(folder / ".kernels"), *([rest] if rest else [])])
    return env


def start_demo(
    port: int = 0, lab: bool = False, timeout: float = START_TIMEOUT_S, log: Any = None
) -> DemoServer:
    """Start the server on a copy of the quickstart notebook; return once it listens.

    ``log`` receives the server's own output (default: this process's stderr).
    """
    from .labs import notebook_dir

    frontend = choose_frontend(lab)
    source = notebook_dir() / NOTEBOOK
    port = pick_port(port)
    folder = Path(tempfile.mkdtemp(prefix="critpath-demo-"))
    shutil.copy(source, folder / NOTEBOOK)
    cmd, url = server_command(frontend, NOTEBOOK, port, secrets.token_hex(16))
    stream = sys.stderr if log is None else log
    env = kernel_env(folder)
    proc = subprocess.Popen(cmd, cwd=folder, stdout=stream, stderr=stream, env=env)
    server = DemoServer(proc, url, frontend, folder)
    try:
        _wait_listening(proc, port, timeout)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that the server is stopped on the way out."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(port: int = 0, open_browser: bool = True, lab: bool = False) -> int:
    """Serve the quickstart until Ctrl+C (or SIGTERM); print its URL; 0, or the
    server's exit code if it stops by itself."""
    if not lab and not installed("voila") and installed("jupyterlab"):
        print(f"critpath demo: Voilà is not installed ({INSTALL_HINT}); opening JupyterLab instead")
    with _stop_on_sigterm():
        t0 = time.perf_counter()
        server = start_demo(port, lab=lab)
        try:
            what = "Voilà" if server.frontend == "voila" else "JupyterLab (Run > Run All Cells)"
            print(
                f"critpath demo: {what} serves {NOTEBOOK} at {server.url} "
                f"(up in {time.perf_counter() - t0:.1f} s; Ctrl+C stops it)",
                flush=True,
            )
            if open_browser:
                webbrowser.open(server.url)
            return server.proc.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            server.stop()


def add_parser(sub: Any) -> None:
    """The ``demo`` subcommand, on the CLI's subparsers."""
    d = sub.add_parser(
        "demo",
        help="the quickstart notebook as a page in the browser (Voilà, else JupyterLab)",
        description="Serve notebooks/01_quickstart.ipynb with Voilà (code cells hidden; "
        f"{INSTALL_HINT}) or, without Voilà or with --lab, in JupyterLab, on 127.0.0.1, "
        "and open it in the browser. Ctrl+C stops the server.",
    )
    d.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="N",
        help="port on 127.0.0.1 (default 0: any free one)",
    )
    d.add_argument("--no-browser", action="store_true", help="print the URL only, open no browser")
    d.add_argument("--lab", action="store_true", help="open the notebook in JupyterLab, not Voilà")


def command(a: argparse.Namespace) -> int:
    """Run ``critpath demo`` from parsed arguments."""
    return run_demo(port=a.port, open_browser=not a.no_browser, lab=a.lab)
