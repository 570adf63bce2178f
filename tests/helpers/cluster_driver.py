"""`rosetta` as a program of its own, with the selftest frameworks of cluster_node_run.py registered
(tests/test_cluster.py sends it SIGINT).

    python cluster_driver.py NOTEBOOKS_DIR [rosetta arguments]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster_node_run  # noqa: E402
from harness import cli  # noqa: E402

cluster_node_run.register(Path(sys.argv[1]))
sys.exit(cli.main(sys.argv[2:]))
