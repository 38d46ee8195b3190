"""Fixtures of the end-to-end browser tests (JupyterLab / Notebook 7 + system Chromium +
Playwright).

The heavy lifting lives in ``harness.py`` so that ``benchmarks/bench_browser_latency.py``
shares it. A missing Chromium or front-end bundle makes the tests fail with the
command that fixes it; they are never skipped silently.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import harness as H
import pytest


def _require(check) -> None:
    try:
        check()
    except H.HarnessError as exc:
        failure = str(exc)
    else:
        return
    pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="session")
def notebook_root():
    """A temp dir holding a copy of the notebook under test (the server's root_dir)."""
    root = Path(tempfile.mkdtemp(prefix="critpath-e2e-"))
    name = H.copy_notebook(root, H.notebook_under_test())
    yield root, name
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def jupyter(notebook_root):
    """A JupyterLab server on a free port of 127.0.0.1, empty token; stopped on every path."""
    _require(H.check_frontend_bundle)
    root, _ = notebook_root
    try:
        with H.jupyter_server(root) as server:
            yield server
    except H.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def browser():
    """A headless Debian Chromium (Playwright persistent context, fresh user-data-dir)."""
    _require(H.find_chromium)
    with H.browser_context() as ctx:
        yield ctx


@pytest.fixture(scope="module")
def explorer(browser, jupyter, notebook_root):
    """The notebook opened and run, the explorer's pathway overlay painted.

    A screenshot is written to ``test-artifacts/explorer.png`` on teardown, whether the
    tests passed or not.
    """
    _, name = notebook_root
    page = browser.new_page()
    errors = H.PageErrors().attach(page)
    try:
        failure = None
        try:
            timings = H.open_explorer(page, jupyter, name)
        except H.HarnessError as exc:
            failure = f"{exc}\n--- server log (tail) ---\n{jupyter.log_tail(40)}"
        if failure:
            pytest.fail(failure, pytrace=False)
        print(f"\n[e2e] timings: {timings}")
        yield H.ExplorerSession(jupyter, page, errors, timings)
    finally:
        shot = H.ARTIFACTS / "explorer.png"
        try:
            H.save_explorer_screenshot(page, shot, H.ARTIFACTS / "explorer-page.png")
            print(f"\n[e2e] screenshot: {shot} (whole page: explorer-page.png)")
        except Exception as exc:  # noqa: BLE001 - a screenshot must not mask the result
            print(f"\n[e2e] screenshot failed: {exc}")
        page.close()
