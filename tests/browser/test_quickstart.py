"""The quickstart notebook in JupyterLab and as ``critpath demo`` (Voilà), in Chromium.

* JupyterLab: ``01_quickstart.ipynb`` opened, its first code cell run alone, the
  explorer's overlay painted; screenshot ``test-artifacts/quickstart-lab.png``.
* ``critpath demo --no-browser --port 0`` started from an empty folder: the URL it
  prints shows the explorer painted (anywidget overlay and bqplot chart) and no code;
  screenshot ``test-artifacts/demo-voila.png``; the server stops on SIGTERM.
* A lab notebook open and run in JupyterLab: ``test-artifacts/lab-jupyterlab.png``
  (``docs/update_screenshots.py`` copies it to ``docs/lab_jupyterlab.png``).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness as H
import pytest

from critpath_widgets.labs import instructor_version, notebook_dir

pytestmark = pytest.mark.browser

QUICKSTART = "01_quickstart.ipynb"
#: the notebook of the lab screenshot, run as its instructor version (exercises answered)
LAB_NOTEBOOK = os.environ.get("CRITPATH_LAB_SCREENSHOT_NOTEBOOK", "02_critical_pathways_lab.ipynb")
PATHWAY_CANVAS = f"{H.PATHWAY_OVERLAY} {H.OVERLAY_CANVAS}"


@pytest.fixture(scope="module")
def lab_server():
    """JupyterLab on a folder holding copies of the quickstart and the lab notebook."""
    try:
        H.check_frontend_bundle()
    except H.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="critpath-quickstart-"))
    shutil.copy(notebook_dir() / QUICKSTART, root / QUICKSTART)
    if LAB_NOTEBOOK != QUICKSTART:
        source = json.loads((notebook_dir() / LAB_NOTEBOOK).read_text(encoding="utf-8"))
        (root / LAB_NOTEBOOK).write_text(json.dumps(instructor_version(source)), encoding="utf-8")
    try:
        with H.jupyter_server(root) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_cell(page, index: int) -> None:
    """Run the open notebook's cell ``index`` alone (as Shift+Enter on it does)."""
    page.evaluate(
        """(i) => { const nb = window.jupyterapp.shell.currentWidget.content;
            nb.activeCellIndex = i;
            return window.jupyterapp.commands.execute('notebook:run-cell'); }""",
        index,
    )


def _shutdown_kernel(page) -> None:
    """Shut the open notebook's kernel down, so a later test of the same server starts
    that notebook afresh."""
    try:
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    except Exception as exc:  # noqa: BLE001 - cleanup only
        print(f"\n[quickstart] kernel shutdown failed: {exc}")


def test_quickstart_first_cell_in_jupyterlab(browser, lab_server):
    page = browser.new_page()
    errors = H.PageErrors().attach(page)
    try:
        H.open_notebook(page, lab_server, QUICKSTART)
        kinds = page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.widgets.map(c => c.model.type)"
        )
        assert kinds[0] == "markdown", kinds
        first_code = kinds.index("code")
        t0 = time.perf_counter()
        _run_cell(page, first_code)
        cell = page.locator(".jp-Notebook .jp-Cell").nth(first_code)
        cell.locator(H.EXPLORER).wait_for(timeout=180_000)
        stats = H.wait_painted(page, H.PATHWAY_OVERLAY, timeout_ms=300_000)
        painted = time.perf_counter() - t0
        assert H.is_painted(stats), stats
        assert H.is_painted(H.wait_painted(page, H.GRADIENT_OVERLAY, timeout_ms=120_000))
        page.wait_for_selector(f"{H.LAYER_CHART} svg rect", timeout=60_000)
        # only that cell ran: the script-route cell has no output
        later = page.locator(".jp-Notebook .jp-Cell").nth(kinds.index("code", first_code + 1))
        assert later.locator(".jp-OutputArea-output").count() == 0
        print(f"\n[quickstart] JupyterLab: first cell run -> overlay painted in {painted:.1f} s")
        assert not errors.page_errors, errors.page_errors
        assert not H.notebook_error_outputs(page), H.notebook_error_outputs(page)
    finally:
        try:
            H.save_explorer_screenshot(page, H.ARTIFACTS / "quickstart-lab.png")
        except Exception as exc:  # noqa: BLE001 - a screenshot must not mask the result
            print(f"\n[quickstart] screenshot failed: {exc}")
        _shutdown_kernel(page)
        page.close()


def _read_lines(stream, out: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)
    out.put(None)


def _wait_url(proc: subprocess.Popen, lines: queue.Queue, timeout: float) -> tuple[str, str]:
    """The URL ``critpath demo`` prints, and everything it printed until then."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/\S*)", line)
        if m:
            return m.group(1), "".join(seen)
    raise AssertionError(f"critpath demo printed no URL (exit {proc.poll()}): {''.join(seen)}")


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM ``critpath demo`` (it stops its server); kill its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise
    return proc.returncode


def test_critpath_demo_shows_the_explorer_without_code(browser, tmp_path):
    pytest.importorskip("voila")
    H.check_frontend_bundle()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(H.REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "critpath_widgets", "demo", "--no-browser", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    page = browser.new_page()
    errors = H.PageErrors().attach(page)
    try:
        url, printed = _wait_url(proc, lines, timeout=180)
        up = time.perf_counter() - t0
        assert "Voilà" in printed and "not installed" not in printed, printed
        page.goto(url, wait_until="domcontentloaded", timeout=180_000)
        page.wait_for_selector(H.EXPLORER, timeout=300_000)
        stats = H.wait_painted(page, H.PATHWAY_OVERLAY, timeout_ms=300_000)
        painted = time.perf_counter() - t0
        assert H.is_painted(stats), stats
        page.wait_for_selector(f"{H.LAYER_CHART} svg rect", timeout=60_000)  # bqplot
        assert H.chart_signature(page), "the layer chart (bqplot) has no bars"
        text = page.inner_text("body")
        assert "Quickstart" in text, text[:500]  # the markdown is shown ...
        for code in ("from critpath_widgets import", "PathwayExplorer()", "explanation_figure("):
            assert code not in text, f"code shown in the demo page: {code!r}"  # ... no code
        assert page.locator(".jp-InputPrompt:visible, .jp-CodeMirrorEditor:visible").count() == 0
        print(f"\n[demo] URL after {up:.1f} s, explorer painted after {painted:.1f} s")
        assert not errors.page_errors, errors.page_errors
    finally:
        try:
            H.save_explorer_screenshot(
                page, H.ARTIFACTS / "demo-voila.png", H.ARTIFACTS / "demo-voila-page.png"
            )
        except Exception as exc:  # noqa: BLE001 - a screenshot must not mask the result
            print(f"\n[demo] screenshot failed: {exc}")
        page.close()
        code = _stop(proc)
    assert code == 0, f"critpath demo exited with {code} on SIGTERM"
    assert list(tmp_path.iterdir()) == [], "critpath demo wrote into the current folder"


@pytest.mark.parametrize("name", [LAB_NOTEBOOK])
def test_lab_notebook_screenshot(browser, lab_server, name):
    """The lab notebook open and run in JupyterLab, for the README."""
    page = browser.new_page()
    try:
        t0 = time.perf_counter()
        H.open_notebook(page, lab_server, name)
        H.run_all_cells(page)
        # the last cell prints the summary: every exercise checked, all of them right
        summary = page.locator(".jp-OutputArea-output", has_text="exercises correct")
        summary.first.wait_for(timeout=600_000)
        H.wait_kernel_idle(page, 600_000)
        ran = time.perf_counter() - t0
        assert not H.notebook_error_outputs(page), H.notebook_error_outputs(page)
        text = summary.first.inner_text()
        done = re.search(r"(\d+)/(\d+) exercises correct", text)
        assert done and done.group(1) == done.group(2), text
        checked = page.locator(".jp-OutputArea-output", has_text="✓")
        assert checked.count() >= 5
        # an exercise's question, solution and ✓ on screen: the lab's point (the notebook
        # is windowed, so it scrolls through its own API, not the DOM's)
        page.evaluate(
            """async () => { const nb = window.jupyterapp.shell.currentWidget.content;
                const cells = Array.from(nb.model.cells);
                const i = cells.findIndex(c => c.sharedModel.getSource().includes('check("q4"'));
                nb.activeCellIndex = i;
                await nb.scrollToItem(i, 'end'); }"""
        )
        page.wait_for_timeout(1_000)
        shot = H.ARTIFACTS / "lab-jupyterlab.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
        print(f"\n[lab] {name} opened and run in {ran:.1f} s; screenshot {shot}")
    finally:
        _shutdown_kernel(page)
        page.close()
