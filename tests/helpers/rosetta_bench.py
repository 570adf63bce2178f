"""`rosetta bench` of one selftest notebook, as a program of its own (tests/test_cli_process.py).

    ROSETTA_TEST_NOTEBOOK=PATH ROSETTA_TEST_BODY=CODE ROSETTA_TEST_STEPS=FILE python rosetta_bench.py [options]

As rosetta_run.py, through `rosetta bench`: building the environments, the parity check and the
ONNX checks are not done but each appends its name to FILE, so that a test sees which steps started.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for selftest
import selftest  # noqa: E402
from harness import cli, frameworks, kernels, onnx, parity  # noqa: E402


def started(step):
    def stand_in(*args, **kwargs):
        with open(os.environ["ROSETTA_TEST_STEPS"], "a") as steps:
            steps.write(step + "\n")
        return []
    return stand_in


framework = selftest.framework(Path(os.environ["ROSETTA_TEST_NOTEBOOK"]), os.environ["ROSETTA_TEST_BODY"])
frameworks.FRAMEWORKS[framework.name] = framework
kernels.unavailable_reason = lambda framework: None
cli.load_data = lambda args, benchmarks: ({}, {})  # no data: the notebook reads none
cli.cmd_data = lambda args, benchmarks=None: 0
cli.cmd_envs = started("envs")
parity.check_all = started("parity")
onnx.check_all = started("onnx")
sys.exit(cli.main(["bench", "selftest", "--benchmark", "cifar", "--device", "cpu"] + sys.argv[1:]))
