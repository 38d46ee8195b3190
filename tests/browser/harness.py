"""Shared harness for the browser end-to-end test and the browser latency benchmark.

It starts a throw-away Jupyter server (the current interpreter, so the kernel runs in
the same environment) as JupyterLab 4 (``jupyter lab``, the default) or Notebook 7
(``jupyter notebook``, ``app="notebook"``), drives Debian's ``chromium`` through
Playwright, opens a notebook, runs all of its cells and offers small probes on the
``PathwayExplorer`` DOM:

* canvas statistics (a pixel hash, whether anything is painted, whether it is uniform),
* the overlay's ``data-paint-count`` / ``data-paint-key`` and an in-page paint log with
  ``performance.now()`` stamps (a ``MutationObserver``), used for latency figures,
* setting the sparsity slider by typing into its readout (reliable) or dragging its
  noUiSlider handle (realistic),
* a signature of the bqplot layer chart's bars.

Both front ends are built on the same JupyterLab application framework: with
``expose_app_in_browser`` set (``LabApp`` / ``JupyterNotebookApp``) each puts its
application object on ``window.jupyterapp``, whose ``shell.currentWidget`` is the open
``NotebookPanel`` (Notebook 7 shows one document per browser tab), and each has a
Run menu with "Run All Cells" (command ``notebook:run-all-cells``). So everything below
``open_notebook`` works unchanged in both; only the server command line and the
notebook's URL (``/lab/tree/<name>`` vs ``/notebooks/<name>``) differ.

Nothing here imports pytest, so ``benchmarks/bench_browser_latency.py`` can use it too.
Playwright's browser download (``playwright install``) is never used: see NOTES.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "notebooks" / "e2e_explorer.ipynb"
ARTIFACTS = REPO_ROOT / "test-artifacts"
OVERLAY_BUNDLE = REPO_ROOT / "critpath_widgets" / "static" / "overlay.js"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# CSS hooks of the PathwayExplorer (see critpath_widgets/widgets/explorer/view.py).
EXPLORER = ".critpath-explorer"
SPARSITY = ".critpath-sparsity"
METHOD = ".critpath-method"
PATHWAY_OVERLAY = ".critpath-pathway-overlay"
GRADIENT_OVERLAY = ".critpath-gradient-overlay"
LAYER_CHART = ".critpath-layer-chart"
MESSAGE = ".critpath-message"
OVERLAY_ROOT = ".critpath-overlay"
OVERLAY_CANVAS = "canvas.critpath-overlay-canvas"


# Front ends the server can be started as: ``jupyter <app>``.
APPS = ("lab", "notebook")


class HarnessError(RuntimeError):
    """The browser harness could not be set up (missing browser, server did not start...)."""


# --------------------------------------------------------------------------- prerequisites


def find_chromium() -> str:
    """Path of the system Chromium, or raise with the command that installs it.

    ``$CRITPATH_CHROMIUM`` overrides the search (a path or a command name).
    """
    override = os.environ.get("CRITPATH_CHROMIUM")
    if override:
        path = shutil.which(override)
        if path:
            return path
        raise HarnessError(
            f"CRITPATH_CHROMIUM={override!r} is not an executable. Install Chromium with "
            "`apt-get update && apt-get install -y chromium` or fix the variable."
        )
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise HarnessError(
        "No Chromium found on PATH. The browser tests need a system Chromium: "
        "`apt-get update && apt-get install -y chromium` (Debian). "
        "Do not run `playwright install` (it downloads a browser and fails offline)."
    )


def check_frontend_bundle() -> None:
    """The anywidget ESM bundle is a build output (gitignored); fail clearly if absent."""
    if not OVERLAY_BUNDLE.exists():
        raise HarnessError(
            f"{OVERLAY_BUNDLE.relative_to(REPO_ROOT)} is missing: run "
            "`npm install && npm run build` at the repository root first."
        )


def ensure_kernelspec(python: str = sys.executable) -> None:
    """Install the ``python3`` kernelspec into the environment if it is not there."""
    out = subprocess.run(
        [python, "-m", "jupyter", "kernelspec", "list", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        specs = json.loads(out.stdout)["kernelspecs"]
    except (ValueError, KeyError):
        specs = {}
    if "python3" not in specs:
        subprocess.run(
            [python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
            check=True,
            capture_output=True,
        )


def check_app(app: str, python: str = sys.executable) -> str:
    """Check that ``jupyter <app>`` is usable in ``python``'s environment; return its version.

    ``app="notebook"`` needs Notebook 7 (Notebook 6 serves the classic UI, which has no
    ``window.jupyterapp``).
    """
    if app not in APPS:
        raise HarnessError(f"unknown Jupyter front end {app!r}; expected one of {APPS}")
    module = "jupyterlab" if app == "lab" else "notebook"
    out = subprocess.run(
        [python, "-c", f"import {module}; print({module}.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    version = out.stdout.strip()
    wanted = "4" if app == "lab" else "7"
    if out.returncode != 0 or version.split(".")[0] != wanted:
        found = f"version {version}" if out.returncode == 0 else "not installed"
        raise HarnessError(
            f"`jupyter {app}` needs {module} {wanted}.x in {python} ({found}): "
            f"`pip install '{module}>={wanted},<{int(wanted) + 1}'` "
            "(or `pip install -e '.[test]'`)."
        )
    return version


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- Jupyter server


@dataclass
class JupyterServer:
    """A running Jupyter server rooted at ``root_dir``, serving JupyterLab or Notebook 7."""

    root_dir: Path
    port: int
    proc: subprocess.Popen
    log_path: Path
    _log_file: Any = field(repr=False, default=None)
    app: str = "lab"  # "lab" (JupyterLab) or "notebook" (Notebook 7)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str) -> str:
        path = urllib.parse.quote(name)
        if self.app == "notebook":
            return f"{self.url}/notebooks/{path}"
        # ?reset: a fresh workspace, so that documents other tests opened on this server
        # are not restored into the page (one of them could become the current widget)
        return f"{self.url}/lab/tree/{path}?reset"

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        # Drop the node stack traces JupyterLab's build checks print when the server runs
        # inside a package.json "type": "module" tree (harmless), cut long lines short.
        kept, skipping = [], False
        for line in lines:
            if line.startswith("file:///") or line.startswith("Fail to get yarn"):
                skipping = True
            if not skipping:
                kept.append(line[:300])
            if line.startswith("Node.js v"):
                skipping = False
        return "\n".join(kept[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # jupyter shuts its kernels down on SIGTERM
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings that keep JupyterLab quiet: no news toast, no update check."""
    apputils = settings_dir / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True, exist_ok=True)
    (apputils / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


def _server_command(
    app: str, python: str, port: int, root_dir: Path, state: Path, settings_dir: Path
) -> list[str]:
    cmd = [
        python,
        "-m",
        "jupyter",
        app,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={root_dir}",
    ]
    # `jupyter notebook` loads JupyterLab's server extension too, and both register the
    # settings API at /lab/api/settings: give both the same settings dir.
    lab = [
        f"--LabApp.user_settings_dir={settings_dir}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
    ]
    if app == "lab":
        return cmd + lab
    return cmd + [
        f"--JupyterNotebookApp.user_settings_dir={settings_dir}",
        f"--JupyterNotebookApp.workspaces_dir={state / 'workspaces'}",
        "--JupyterNotebookApp.expose_app_in_browser=True",
        *lab,
    ]


@contextlib.contextmanager
def jupyter_server(
    root_dir: Path, python: str = sys.executable, timeout: float = 90.0, app: str = "lab"
) -> Iterator[JupyterServer]:
    """Start ``python -m jupyter <app>`` on a free port of 127.0.0.1; always stop it.

    ``app`` is ``"lab"`` (JupyterLab 4, the default) or ``"notebook"`` (Notebook 7).
    """
    check_app(app, python)
    ensure_kernelspec(python)
    state = Path(tempfile.mkdtemp(prefix="critpath-jupyter-state-"))
    settings_dir = state / "settings"
    _write_lab_settings(settings_dir)
    port = free_port()
    env = dict(os.environ)
    # The kernel must import the working tree's critpath_widgets even when the package
    # is not installed in the environment; the kernel inherits the server's environment.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(python).parent), env.get("PATH", "")))
    env["JUPYTER_RUNTIME_DIR"] = str(state / "runtime")
    env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = _server_command(app, python, port, root_dir, state, settings_dir)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI runners often run as root
    log_path = state / "jupyter.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - closed in JupyterServer.stop
    proc = subprocess.Popen(
        cmd,
        cwd=root_dir,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = JupyterServer(root_dir, port, proc, log_path, log_file, app=app)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise HarnessError(
                    f"jupyter {app} exited with {proc.returncode}:\n{server.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{server.url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"jupyter {app} did not answer within {timeout:.0f} s:\n{server.log_tail()}"
                )
            time.sleep(0.25)
        yield server
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


def copy_notebook(dest_dir: Path, src: Path = NOTEBOOK) -> str:
    """Copy the committed notebook into ``dest_dir``; return its name."""
    shutil.copy(src, dest_dir / src.name)
    return src.name


# --------------------------------------------------------------------------- browser


@contextlib.contextmanager
def browser_context(headless: bool = True, viewport=(1400, 1000)) -> Iterator[Any]:
    """A Playwright persistent Chromium context on a fresh ``--user-data-dir``."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    user_data = tempfile.mkdtemp(prefix="critpath-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                user_data,
                executable_path=executable,
                headless=headless,
                args=CHROMIUM_ARGS,
                viewport={"width": viewport[0], "height": viewport[1]},
            )
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(user_data, ignore_errors=True)


@dataclass
class PageErrors:
    """JS errors and console errors collected from a page."""

    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    # The JS stack of each page error, in the same order as ``page_errors``.
    page_error_stacks: list[str] = field(default_factory=list)

    def attach(self, page) -> PageErrors:
        page.on("pageerror", self._on_page_error)
        page.on(
            "console",
            lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None,
        )
        return self

    def _on_page_error(self, exc) -> None:
        self.page_errors.append(str(exc))
        self.page_error_stacks.append(getattr(exc, "stack", None) or "")


def wait_kernel_idle(page, timeout_ms: float = 60_000) -> None:
    """Wait until the current notebook's kernel is connected and idle."""
    page.wait_for_function(
        """() => {
            const app = window.jupyterapp;
            const w = app && app.shell.currentWidget;
            const ctx = w && w.sessionContext;
            const k = ctx && ctx.session && ctx.session.kernel;
            return !!(k && k.connectionStatus === 'connected' && k.status === 'idle');
        }""",
        timeout=timeout_ms,
    )


def open_notebook(page, server: JupyterServer, name: str, timeout_ms: float = 90_000) -> None:
    """Open ``name`` in the server's front end (JupyterLab or Notebook 7), wait for its kernel."""
    page.goto(server.notebook_url(name), wait_until="domcontentloaded", timeout=timeout_ms)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_ms)
    page.wait_for_function("() => !!window.jupyterapp", timeout=timeout_ms)
    wait_kernel_idle(page, timeout_ms)


def app_info(page) -> dict:
    """Name and version of the front end in the page (``window.jupyterapp``).

    ``{"name": "JupyterLab", "version": "4.6.6", "page": null}`` or
    ``{"name": "Jupyter Notebook", "version": "7.6.5", "page": "notebooks"}``: ``page``
    is Notebook 7's page kind (``<body data-notebook=...>``), absent in JupyterLab.
    """
    return page.evaluate(
        """() => { const app = window.jupyterapp;
            return app ? {name: app.name, version: app.version,
                          page: document.body.dataset.notebook || null} : null; }"""
    )


def run_all_cells(page, timeout_ms: float = 10_000) -> str:
    """Run All Cells through the Run menu (what a person does).

    JupyterLab and Notebook 7 have the same Run menu. Falls back to the same command
    (``notebook:run-all-cells``) if the menu could not be used; returns which route was
    taken.
    """
    try:
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click(timeout=timeout_ms)
        item = page.locator(".lm-Menu-item", has_text="Run All Cells").first
        item.click(timeout=timeout_ms)
        return "menu"
    except Exception:  # noqa: BLE001 - any UI hiccup: use the command instead
        page.keyboard.press("Escape")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        return "command"


def kernel_eval(page, code: str, timeout_ms: float = 30_000) -> str | None:
    """Run ``code`` in the open notebook's kernel (no cell); return its text/plain result.

    Uses JupyterLab's kernel connection from the page, so it checks what the kernel
    really holds after a browser-side change. Errors come back as ``"ERROR: ..."``.
    """
    return page.evaluate(
        """async ([code, timeout]) => {
            const w = window.jupyterapp.shell.currentWidget;
            const k = w.sessionContext.session.kernel;
            const fut = k.requestExecute({code, silent: false, store_history: false});
            let out = null;
            fut.onIOPub = (msg) => {
                const t = msg.header.msg_type;
                if (t === 'execute_result') out = msg.content.data['text/plain'];
                else if (t === 'error') out = `ERROR: ${msg.content.ename}: ${msg.content.evalue}`;
                else if (t === 'stream') out = (out || '') + msg.content.text;
            };
            await Promise.race([fut.done, new Promise((_, rej) =>
                setTimeout(() => rej(new Error('kernel_eval timed out')), timeout))]);
            return out;
        }""",
        [code, timeout_ms],
    )


def notebook_error_outputs(page) -> list[str]:
    """Texts of error outputs (tracebacks) in the open notebook."""
    return page.eval_on_selector_all(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]',
        "els => els.map(e => e.innerText.slice(0, 2000))",
    )


# --------------------------------------------------------------------------- DOM probes

_CANVAS_STATS_JS = """(sel) => {
    const c = document.querySelector(sel);
    if (!c || !c.width || !c.height) return null;
    let data;
    try {
        data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    } catch (e) {
        return {error: String(e)};
    }
    let h = 2166136261 >>> 0, opaque = 0, uniform = true;
    for (let i = 0; i < data.length; i++) {
        h = Math.imul(h ^ data[i], 16777619) >>> 0;
        if (data[i] !== data[i & 3]) uniform = false;
    }
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) opaque++;
    return {width: c.width, height: c.height, hash: h.toString(16), opaque,
            uniform, pixels: data.length / 4};
}"""


def canvas_stats(page, selector: str) -> dict | None:
    """Hash and simple statistics of the first canvas matching ``selector``."""
    return page.evaluate(_CANVAS_STATS_JS, selector)


def is_painted(stats: dict | None) -> bool:
    return bool(stats) and "error" not in stats and stats["opaque"] > 0 and not stats["uniform"]


def paint_state(page, overlay_selector: str) -> dict | None:
    """``data-paint-count``/``data-paint-key`` of the overlay root under ``overlay_selector``."""
    return page.evaluate(
        """(sel) => {
            const el = document.querySelector(sel);
            if (!el) return null;
            const root = el.matches('[data-paint-count]') ? el
                : el.querySelector('[data-paint-count]');
            if (!root) return null;
            return {count: Number(root.dataset.paintCount), key: root.dataset.paintKey};
        }""",
        overlay_selector,
    )


def wait_painted(page, overlay_selector: str, timeout_ms: float = 120_000) -> dict:
    """Wait until the overlay's canvas holds a non-uniform, non-transparent image."""
    canvas_sel = f"{overlay_selector} {OVERLAY_CANVAS}"
    page.wait_for_selector(canvas_sel, state="attached", timeout=timeout_ms)
    page.wait_for_function(
        f"""(sel) => {{
            const s = ({_CANVAS_STATS_JS})(sel);
            return !!s && !s.error && s.opaque > 0 && !s.uniform;
        }}""",
        arg=canvas_sel,
        timeout=timeout_ms,
        polling=200,
    )
    return canvas_stats(page, canvas_sel)


def wait_repaint(
    page, overlay_selector: str, before: dict, timeout_ms: float = 60_000, new_key: bool = True
) -> dict:
    """Wait for ``paintCount`` to pass ``before['count']`` (and the key to change)."""
    page.wait_for_function(
        """([sel, count, key, newKey]) => {
            const el = document.querySelector(sel);
            const root = el && (el.matches('[data-paint-count]') ? el
                : el.querySelector('[data-paint-count]'));
            if (!root) return false;
            return Number(root.dataset.paintCount) > count
                && (!newKey || root.dataset.paintKey !== key);
        }""",
        arg=[overlay_selector, before["count"], before["key"], new_key],
        timeout=timeout_ms,
        polling="raf",
    )
    return paint_state(page, overlay_selector)


def wait_canvas_change(page, selector: str, before_hash: str, timeout_ms: float = 30_000) -> dict:
    """Wait until the pixels of the canvas ``selector`` hash differently from ``before_hash``.

    A repaint's ``data-paint-key`` can change before its final pixels land (several
    repaints per update), so tests that compare pictures wait on the pixels themselves.
    """
    page.wait_for_function(
        f"""([sel, before]) => {{
            const s = ({_CANVAS_STATS_JS})(sel);
            return !!s && !s.error && s.hash !== before;
        }}""",
        arg=[selector, before_hash],
        timeout=timeout_ms,
        polling=100,
    )
    return canvas_stats(page, selector)


INSTALL_PAINT_LOG_JS = """(sel) => {
    const el = document.querySelector(sel);
    const root = el.matches('[data-paint-count]') ? el : el.querySelector('[data-paint-count]');
    window.__critpathPaints = [];
    window.__critpathInputs = [];
    if (window.__critpathObserver) window.__critpathObserver.disconnect();
    const obs = new MutationObserver(() => {
        const n = Number(root.dataset.paintCount);
        const log = window.__critpathPaints;
        if (!log.length || log[log.length - 1].count !== n)
            log.push({t: performance.now(), count: n, key: root.dataset.paintKey});
    });
    obs.observe(root, {attributes: true,
                       attributeFilter: ['data-paint-count', 'data-paint-key']});
    window.__critpathObserver = obs;
    // The explorer's message area: its summary names the sparsity shown and ends with
    // the kernel-side compute time "(N ms)".
    window.__critpathMessages = [];
    const msg = document.querySelector('.critpath-message');
    if (window.__critpathMsgObserver) window.__critpathMsgObserver.disconnect();
    if (msg) {
        const mobs = new MutationObserver(() => window.__critpathMessages.push(
            {t: performance.now(), text: msg.innerText}));
        mobs.observe(msg, {childList: true, subtree: true, characterData: true});
        window.__critpathMsgObserver = mobs;
    }
    const stamp = (kind) => (ev) => window.__critpathInputs.push({t: performance.now(), kind});
    if (!window.__critpathInputHooks) {
        window.__critpathInputHooks = true;
        // Capture phase: stamped before the widget's own handlers run.
        document.addEventListener('keydown', (ev) => {
            if (ev.key === 'Enter' && ev.target.closest && ev.target.closest('.widget-readout'))
                stamp('readout-enter')(ev);
        }, true);
        document.addEventListener('pointerup', (ev) => {
            if (ev.target.closest && ev.target.closest('.noUi-target')) stamp('slider-release')(ev);
        }, true);
        document.addEventListener('change', (ev) => {
            if (ev.target.tagName === 'SELECT') stamp('select-change')(ev);
        }, true);
    }
    return !!root;
}"""


def install_paint_log(page, overlay_selector: str) -> None:
    """Log every repaint of the overlay and every user input with performance.now()."""
    page.evaluate(INSTALL_PAINT_LOG_JS, overlay_selector)


def paint_log(page) -> dict:
    return page.evaluate(
        """() => ({paints: window.__critpathPaints || [], inputs: window.__critpathInputs || [],
                   messages: window.__critpathMessages || []})"""
    )


def slider_value(page, selector: str = SPARSITY) -> float:
    text = page.locator(f"{selector} .widget-readout").first.inner_text()
    return float(text.strip())


def set_slider_by_readout(page, value: float, selector: str = SPARSITY) -> None:
    """Type ``value`` into the slider's editable readout and press Enter.

    ipywidgets 8 sliders commit the readout's text on Enter; this sets an exact value,
    which is why the test and benchmark use it. :func:`drag_slider` is the pointer route.
    """
    readout = page.locator(f"{selector} .widget-readout").first
    readout.click()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type(f"{value:g}")
    page.keyboard.press("Enter")


def drag_slider(page, fraction: float, selector: str = SPARSITY) -> None:
    """Drag the noUiSlider handle to ``fraction`` (0..1) of the track with the mouse."""
    track = page.locator(f"{selector} .noUi-target").first
    handle = page.locator(f"{selector} .noUi-handle").first
    tb = track.bounding_box()
    hb = handle.bounding_box()
    if tb is None or hb is None:
        raise HarnessError("slider track or handle not visible")
    x0, y0 = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
    x1 = tb["x"] + fraction * tb["width"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    steps = 8
    for i in range(1, steps + 1):
        page.mouse.move(x0 + (x1 - x0) * i / steps, y0)
    page.mouse.up()


def chart_signature(page, selector: str = LAYER_CHART) -> str | None:
    """Geometry of the bars of the bqplot chart (``rect`` elements of its mark layer)."""
    return page.evaluate(
        """(sel) => {
            const el = document.querySelector(sel);
            if (!el) return null;
            const rects = [...el.querySelectorAll('svg .bargroup rect, svg g.bar rect')];
            const use = rects.length ? rects : [...el.querySelectorAll('svg rect')];
            return use.map(r => ['x', 'y', 'width', 'height']
                .map(a => r.getAttribute(a)).join(',')).join(';');
        }""",
        selector,
    )


def wait_message_contains(
    page, text: str, selector: str = MESSAGE, timeout_ms: float = 60_000
) -> str:
    """Wait until the explorer's message area contains ``text``; return the message."""
    page.wait_for_function(
        """([sel, text]) => { const el = document.querySelector(sel);
            return !!el && el.innerText.includes(text); }""",
        arg=[selector, text],
        timeout=timeout_ms,
        polling=100,
    )
    return message_text(page, selector)


def reported_compute_ms(message: str) -> float | None:
    """The kernel-side time the explorer reports at the end of its summary, "(N ms)"."""
    m = re.search(r"\((\d+(?:\.\d+)?) ms\)\s*$", message.strip())
    return float(m.group(1)) if m else None


def message_text(page, selector: str = MESSAGE) -> str:
    loc = page.locator(selector)
    return loc.first.inner_text() if loc.count() else ""


def overlay_selects(page, overlay_selector: str) -> list[dict]:
    """The ``<select>`` controls inside an overlay, with their options."""
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel + ' select')].map((s, i) => ({
            index: i, name: s.name || '', cls: s.className, value: s.value,
            title: s.title || '', label: (s.labels && s.labels[0]
                ? s.labels[0].innerText : (s.getAttribute('aria-label') || '')),
            options: [...s.options].map(o => o.value)}))""",
        overlay_selector,
    )


# --------------------------------------------------------------------------- one-stop session


@dataclass
class ExplorerSession:
    """An open notebook whose explorer has painted its first pathway overlay."""

    server: JupyterServer
    page: Any
    errors: PageErrors
    timings: dict[str, float]


def save_explorer_screenshot(page, path: Path, page_path: Path | None = None) -> Path:
    """Screenshot the explorer into ``path`` (the whole page if there is no explorer).

    ``page_path`` also gets a screenshot of the whole page as it was. The viewport grows
    so that the whole explorer fits: the notebook panel is a scroll container that would
    clip an element screenshot.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if page_path is not None:
        page.screenshot(path=str(page_path))
    target = page.locator(EXPLORER)
    if target.count():
        height = target.first.evaluate("e => e.getBoundingClientRect().height")
        width = (page.viewport_size or {}).get("width", 1400)
        page.set_viewport_size({"width": width, "height": int(height) + 600})
        target.first.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        target.first.screenshot(path=str(path), timeout=10_000)
    else:
        page.screenshot(path=str(path), full_page=True)
    return path


def notebook_under_test() -> Path:
    """The committed notebook, or ``$CRITPATH_E2E_NOTEBOOK`` (for debugging the harness)."""
    return Path(os.environ.get("CRITPATH_E2E_NOTEBOOK", NOTEBOOK))


def open_explorer(
    page, server: JupyterServer, name: str, ready_timeout_ms: float = 180_000
) -> dict[str, float]:
    """Open ``name``, Run All Cells, wait for the explorer's first painted overlay.

    Returns wall-clock timings (seconds) of the steps.
    """
    t0 = time.perf_counter()
    open_notebook(page, server, name)
    t1 = time.perf_counter()
    route = run_all_cells(page)
    page.wait_for_selector(EXPLORER, timeout=ready_timeout_ms)
    t2 = time.perf_counter()
    canvas_sel = f"{PATHWAY_OVERLAY} {OVERLAY_CANVAS}"
    try:
        # Painted, or fail fast on an error shown by the explorer or the notebook.
        outcome = page.wait_for_function(
            f"""([sel, msg]) => {{
                if (document.querySelector(msg + ' [data-kind="error"]')) return 'error';
                if (document.querySelector(
                    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'))
                    return 'error';
                const s = ({_CANVAS_STATS_JS})(sel);
                return (!!s && !s.error && s.opaque > 0 && !s.uniform) ? 'painted' : false;
            }}""",
            arg=[canvas_sel, MESSAGE],
            timeout=ready_timeout_ms,
            polling=200,
        ).json_value()
    except Exception as exc:
        outcome = f"timeout ({exc.__class__.__name__})"
    if outcome != "painted":
        raise HarnessError(
            f"the pathway overlay was not painted ({outcome}); notebook errors: "
            f"{notebook_error_outputs(page)!r}; message area: {message_text(page)!r}"
        )
    t3 = time.perf_counter()
    return {
        "open_notebook_s": t1 - t0,
        "explorer_shown_s": t2 - t1,
        "first_paint_s": t3 - t1,
        "run_all_route": route,  # type: ignore[dict-item]
    }


@contextlib.contextmanager
def explorer_session(
    notebook: Path | None = None, headless: bool = True, app: str = "lab"
) -> Iterator[ExplorerSession]:
    """Server + browser + notebook opened and run; everything torn down on exit.

    ``app`` picks the front end: ``"lab"`` (JupyterLab, the default) or ``"notebook"``.
    """
    find_chromium()
    check_frontend_bundle()
    notebook = notebook or notebook_under_test()
    root = Path(tempfile.mkdtemp(prefix="critpath-e2e-"))
    try:
        name = copy_notebook(root, notebook)
        with jupyter_server(root, app=app) as server, browser_context(headless=headless) as ctx:
            page = ctx.new_page()
            errors = PageErrors().attach(page)
            timings = open_explorer(page, server, name)
            yield ExplorerSession(server, page, errors, timings)
    finally:
        shutil.rmtree(root, ignore_errors=True)
