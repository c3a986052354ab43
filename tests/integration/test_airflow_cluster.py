"""The process harness of the distributed test finds and ends what it started, including
grandchildren that left its process group (as Airflow's task supervisor does with
setpgid) and processes that ignore SIGTERM; so "no process left" there is a real check."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import airflow_cluster as ac  # noqa: E402

# A component that starts a grandchild in a process group of its own, like a Celery worker
# whose task supervisor calls setpgid; the grandchild ignores SIGTERM.
_GRANDCHILD = """
import os, signal, time
os.setpgid(0, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(os.environ["READY_FILE"], "w").write(str(os.getpid()))
time.sleep(600)
"""
_PARENT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1]])
time.sleep(600)
"""


def test_stop_all_ends_grandchildren_outside_the_process_group(tmp_path):
    cluster = ac.AirflowCluster(work_dir=tmp_path, dags_folder=tmp_path)
    ready = tmp_path / "grandchild.pid"
    parent = cluster.spawn("parent", [sys.executable, "-c", _PARENT, _GRANDCHILD],
                           env={"READY_FILE": str(ready)})
    deadline = time.monotonic() + 30
    while not ready.exists() or not ready.read_text():
        assert time.monotonic() < deadline, parent.log_tail()
        time.sleep(0.1)
    grandchild = int(ready.read_text())
    assert os.getpgid(grandchild) != parent.pid  # out of the group killpg signals
    assert set(cluster.stray_processes()) == {parent.pid, grandchild}

    forced = cluster.stop_all(timeout=2)

    assert forced == [f"stray pid {grandchild}"]  # SIGTERM was ignored: it took SIGKILL
    assert parent.popen.returncode is not None
    assert cluster.stray_processes() == []
