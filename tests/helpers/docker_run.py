"""Reading a ``docker run`` command line back: its mounts, its options, the papermill it runs."""
from __future__ import annotations

from pathlib import Path


def volumes(command: list[str]) -> dict[str, str]:
    """container path -> host path, from the -v options."""
    found = {}
    for i, word in enumerate(command):
        if word == "-v":
            host, inside = command[i + 1].split(":")[:2]
            found[inside] = host
    return found


def to_host(command: list[str], path: str) -> Path:
    """The host path behind a container path, by the command's own -v options."""
    binds = volumes(command)
    for inside in sorted(binds, key=len, reverse=True):
        if path == inside or path.startswith(inside + "/"):
            return Path(binds[inside] + path[len(inside):])
    raise AssertionError(f"{path} is not under any mount of {binds}")


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def papermill_part(command: list[str], image: str) -> list[str]:
    at = command.index(image)
    assert command[at + 1:at + 4] == ["python", "-m", "papermill"], command[at:]
    return command[at + 4:]
