"""A kernel that shuts down while the explorer computes exits cleanly (no abort): its
request worker and model poller stop at interpreter exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBES = {
    "worker": """
import time
from critpath_widgets import PathwayExplorer
w = PathwayExplorer(auto_refresh=True)
w.wait()
w.method = "neuron_intgrad"   # a long request still running when the interpreter exits
time.sleep(0.3)
print("exiting", flush=True)
""",
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_interpreter_exit_during_a_computation_does_not_abort(tmp_path, probe):
    # before the explorer's threads were stopped at exit, a daemon thread inside torch
    # made the process abort: "terminate called without an active exception", code 134
    done = subprocess.run(
        [sys.executable, "-c", PROBES[probe]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "exiting" in done.stdout, done.stderr
    assert done.returncode == 0, done.stderr[-2000:]
    assert "terminate called" not in done.stderr
