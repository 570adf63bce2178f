"""harness.processes: finding the processes under a process, from /proc or from a snapshot."""
import os
import subprocess
import sys
import time

from harness import processes, quiet


def test_descendants_walks_a_tree_once_each():
    tree = {1: [2, 3], 2: [4], 3: [], 4: [1, 2]}  # 4 -> 1 and 2: a pid reused while the tree was read
    assert sorted(processes.descendants(1, lambda pid: tree.get(pid, ()))) == [2, 3, 4]
    assert processes.descendants(3, lambda pid: tree.get(pid, ())) == []


def test_quiet_counts_the_same_tree_from_its_snapshot():
    snapshot = {10: (1, 0), 11: (10, 5), 12: (11, 7), 13: (1, 9)}  # pid -> (parent, jiffies)
    assert quiet.own_tree(snapshot, 10) == {10, 11, 12}


def test_descendants_from_proc_and_the_tree_stopped():
    child = subprocess.Popen([sys.executable, "-c", "import subprocess; subprocess.run(['sleep', '30'])"],
                             start_new_session=True)  # as papermill runs: a session of its own
    try:
        deadline, found = time.monotonic() + 10, []
        while time.monotonic() < deadline and not found:
            found = processes.descendants(child.pid)  # the sleep, once started
            time.sleep(0.05)
        assert len(found) == 1 and processes.alive(found[0])
        assert child.pid in processes.descendants(os.getpid())
    finally:
        processes.stop_tree(child, grace=5)
    assert child.poll() is not None and not processes.alive(found[0])
