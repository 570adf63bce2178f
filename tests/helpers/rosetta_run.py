"""`rosetta run` of one selftest notebook, as a program of its own (tests/test_cli_process.py).

    ROSETTA_TEST_NOTEBOOK=PATH ROSETTA_TEST_BODY=CODE python rosetta_run.py [rosetta run options]

The notebook PATH is written with CODE as its body (tests/selftest.py) and run as the framework
"selftest" on the CPU, with no environment check and no data: the kernel reads none.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for selftest
import selftest  # noqa: E402
from harness import cli, frameworks, kernels  # noqa: E402

framework = selftest.framework(Path(os.environ["ROSETTA_TEST_NOTEBOOK"]), os.environ["ROSETTA_TEST_BODY"])
frameworks.FRAMEWORKS[framework.name] = framework
kernels.unavailable_reason = lambda framework: None
cli.load_data = lambda args, benchmarks: ({}, {})  # no data: the notebook reads none
cli.cmd_data = lambda args, benchmarks=None: 0
sys.exit(cli.main(["run", "selftest", "--benchmark", "cifar", "--device", "cpu"] + sys.argv[1:]))
