"""``critpath demo``: its options, the port it takes, the front end it picks and its errors.

The browser checks (the explorer painted in Voilà) are in tests/browser/test_quickstart.py.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from critpath_widgets import demo
from critpath_widgets.cli import main

REAL_FIND_SPEC = importlib.util.find_spec


def _without(monkeypatch, *modules: str) -> None:
    """Make ``modules`` look uninstalled to ``importlib.util.find_spec``."""

    def find_spec(name, *args, **kwargs):
        return None if name in modules else REAL_FIND_SPEC(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


class _Finished:
    """A server process that has already stopped (for run_demo without a server)."""

    returncode = 0

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


def _fake_start(calls: list):
    def start(port=0, lab=False, **kwargs):
        frontend = demo.choose_frontend(lab)
        cmd, url = demo.server_command(frontend, demo.NOTEBOOK, demo.pick_port(port), "tok")
        calls.append((frontend, cmd, url))
        return demo.DemoServer(_Finished(), url, frontend, Path("/nonexistent-critpath-demo"))

    return start


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--port N", "--no-browser", "--lab"):
        assert option in out
    assert "Voilà" in out and "JupyterLab" in out


def test_demo_bad_option_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--port", "abc"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("critpath: error:"), err


def test_port_zero_picks_a_free_port():
    port = demo.pick_port(0)
    assert 1024 <= port <= 65535
    with socket.socket() as s:  # free: it can be bound on 127.0.0.1 right away
        s.bind(("127.0.0.1", port))


def test_busy_port_is_our_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(demo.DemoError, match=f"--port {busy}"):
            demo.pick_port(busy)
        assert main(["demo", "--no-browser", "--port", str(busy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("critpath: error: --port") and "in use" in err[-1], err


def test_voila_is_the_front_end_when_installed(monkeypatch, capsys):
    pytest.importorskip("voila")
    calls: list = []
    monkeypatch.setattr(demo, "start_demo", _fake_start(calls))
    assert main(["demo", "--no-browser"]) == 0
    ((frontend, cmd, url),) = calls
    assert frontend == "voila" and cmd[1:4] == ["-m", "voila", demo.NOTEBOOK]
    assert "--Voila.ip=127.0.0.1" in cmd and url.startswith("http://127.0.0.1:")
    out = capsys.readouterr().out
    assert url in out and "not installed" not in out


def test_fallback_to_jupyterlab_without_voila(monkeypatch, capsys):
    _without(monkeypatch, "voila")
    assert demo.choose_frontend() == "lab"
    calls: list = []
    monkeypatch.setattr(demo, "start_demo", _fake_start(calls))
    assert main(["demo", "--no-browser", "--port", "0"]) == 0
    ((frontend, cmd, url),) = calls
    assert frontend == "lab" and cmd[1:3] == ["-m", "jupyterlab"]
    assert "/lab/tree/01_quickstart.ipynb?token=" in url
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("critpath demo: Voilà is not installed"), out
    assert "JupyterLab" in out[0] and "critpath-widgets[demo]" in out[0]
    assert url in out[1]


def test_lab_option_uses_jupyterlab(monkeypatch):
    calls: list = []
    monkeypatch.setattr(demo, "start_demo", _fake_start(calls))
    assert main(["demo", "--no-browser", "--lab"]) == 0
    assert calls[0][0] == "lab"


def test_neither_voila_nor_jupyterlab(monkeypatch, capsys):
    _without(monkeypatch, "voila", "jupyterlab")
    with pytest.raises(demo.DemoError):
        demo.choose_frontend()
    assert main(["demo", "--no-browser"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("critpath: error: critpath demo needs Voilà or JupyterLab")
    assert "pip install 'critpath-widgets[demo]'" in err[0]
    assert "not installed" not in captured.out  # no fallback line before the error


@pytest.mark.slow
def test_jupyterlab_fallback_serves_the_notebook(monkeypatch, tmp_path):
    """The real fallback: JupyterLab answers the printed URL; stopping it cleans up."""
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    server = demo.start_demo(0, lab=True, log=log)
    try:
        up = time.perf_counter() - t0
        with urllib.request.urlopen(server.url, timeout=60) as r:
            assert r.status == 200
        api = server.url.replace(
            "/lab/tree/01_quickstart.ipynb?", "/api/contents/01_quickstart.ipynb?"
        )
        with urllib.request.urlopen(api, timeout=60) as r:
            assert b"PathwayExplorer()" in r.read()  # the copy of the quickstart
        print(f"\n[demo] JupyterLab listening after {up:.1f} s")
    finally:
        server.stop()
        log.close()
    assert server.proc.poll() is not None and not server.folder.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "server.log"]  # nothing written here


def test_server_exit_is_our_error(monkeypatch, tmp_path):
    """A server that exits at once is a DemoError, not a hang."""
    monkeypatch.setattr(
        demo, "server_command", lambda *a, **k: (["python3", "-c", "raise SystemExit(3)"], "x")
    )
    with pytest.raises(demo.DemoError, match="exited with code 3"):
        demo.start_demo(0, log=subprocess.DEVNULL)


def test_the_demo_kernel_is_this_python_even_with_a_user_wide_python3(tmp_path, monkeypatch):
    """A user's own ``python3`` kernel spec (another environment, without critpath_widgets)
    must not be what the demo page starts."""
    import json
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    from critpath_widgets.demo import kernel_env

    user = tmp_path / "user-data" / "kernels" / "python3"
    user.mkdir(parents=True)
    (user / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    "/elsewhere/bin/python",
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    "{connection_file}",
                ],
                "display_name": "Python 3",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-data"))
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    # outside a virtual environment the user's folder comes before the environment's
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == "/elsewhere/bin/python"
    served = tmp_path / "served"
    served.mkdir()
    env = kernel_env(served)
    monkeypatch.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    assert [p.name for p in served.iterdir()] == [".kernels"]  # hidden in the file browser
