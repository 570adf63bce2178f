#!/usr/bin/env python3
"""A stand-in for docker: logs its arguments; `run` executes papermill here, paths translated back.

The tests copy it as ``docker`` with their own Python in its first line (the Python whose
papermill and kernels the run uses) and name it by $ROSETTA_DOCKER. $FAKE_DOCKER_LOG is where
each call's arguments go, one JSON list a line; with $FAKE_DOCKER_NO_IMAGE set, no image exists.
"""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:2] == ["image", "inspect"]:
    if os.environ.get("FAKE_DOCKER_NO_IMAGE"):
        sys.stderr.write("Error: No such image: " + args[-1] + "\n")
        sys.exit(1)
    sys.exit(0)
if args[0] == "kill":
    sys.exit(0)
assert args[0] == "run", args
with_value = {"--name", "--gpus", "--shm-size", "--user", "-e", "-v", "-w"}
binds, i = [], 1
while args[i].startswith("-"):
    if args[i] == "-v":
        host, inside = args[i + 1].split(":")[:2]
        binds.append((inside, host))
    i += 2 if args[i] in with_value else 1
command = args[i + 1:]
def host(value):
    for inside, outside in sorted(binds, key=lambda b: -len(b[0])):
        if value == inside or value.startswith(inside + "/"):
            return outside + value[len(inside):]
    if value.startswith("/"):  # a host path: a real container would not find it
        sys.exit("fake docker: " + value + " is not mounted in the container")
    return value
translated = [host(a) for a in command]
k = command.index("--parameters_yaml")
parameters = json.loads(command[k + 1])
translated[k + 1] = json.dumps({key: host(v) if isinstance(v, str) else v for key, v in parameters.items()})
assert translated[:3] == ["python", "-m", "papermill"], translated
os.execv(sys.executable, [sys.executable] + translated[1:])
