"""Reading a Dockerfile as docker would, enough for the tests of docker/: its instructions
(continuations joined, comments dropped), build arguments, ENV, the shell commands of its RUN
steps, its pip installs, COPY targets and base image, and the CUDA the base image provides.

    steps = instructions(path)
    base_image(steps), base_cuda(steps), pip_installs(steps, arguments(steps))
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

CUDA_TAG = re.compile(r"^(?:[\w.-]+/)*cuda:(\d+)\.(\d+)")        # nvidia/cuda:11.2.2-cudnn8-...


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    found, pending = [], []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:  # Docker drops comment lines inside continuations too
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        text = " ".join([*pending, line])
        pending = []
        keyword, _, rest = text.partition(" ")
        found.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path}: the last instruction ends in a continuation"
    return found


def arguments(steps: list[tuple[str, str]]) -> dict[str, str]:
    """The default of every ARG (Dockerfile build arguments)."""
    defaults = {}
    for keyword, rest in steps:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def substitute(text: str, defaults: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults.get(m.group(1) or m.group(2), m.group(0)), text)


def environment_variables(steps) -> dict[str, str]:
    variables = {}
    for keyword, rest in steps:
        if keyword == "ENV":
            for word in shlex.split(rest):
                if "=" in word:
                    name, _, value = word.partition("=")
                    variables[name] = value
    return variables


def commands(steps, defaults) -> list[list[str]]:
    """Every shell command of every RUN, split at && and ;, as words, in order."""
    found = []
    for keyword, rest in steps:
        if keyword != "RUN":
            continue
        lexer = shlex.shlex(substitute(rest, defaults), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = []
        for token in lexer:
            if token in ("&&", ";", "||", "|"):
                found.append(words)
                words = []
            else:
                words.append(token)
        found.append(words)
    return [words for words in found if words]


def pip_installs(steps, defaults) -> list[list[str]]:
    return [words for words in commands(steps, defaults)
            if "pip" in words and "install" in words[words.index("pip"):]]


def requirement_files(words: list[str]) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-r", "--requirement")] + \
           [w.split("=", 1)[1] for w in words if w.startswith("--requirement=")]


def copied_to(steps, source: str) -> str | None:
    """Where a COPY from the build context (the repository) puts ``source``, or None."""
    for keyword, rest in steps:
        if keyword != "COPY":
            continue
        words = shlex.split(rest)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources, target = words[:-1], words[-1]
        if source in sources:
            return target.rstrip("/") + "/" + Path(source).name if target.endswith("/") or len(sources) > 1 \
                else target
    return None


def base_image(steps) -> str:
    defaults = arguments(steps)
    froms = [substitute(rest, defaults).split()[0] for keyword, rest in steps if keyword == "FROM"]
    assert froms, "no FROM"
    return froms[-1]


def base_cuda(steps) -> tuple[int, int] | None:
    """The CUDA the image provides: an nvidia/cuda tag's, else its ENV CUDA_VERSION."""
    tag = CUDA_TAG.match(base_image(steps))
    if tag:
        return int(tag.group(1)), int(tag.group(2))
    version = environment_variables(steps).get("CUDA_VERSION")
    if version:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    return None


def cuda_of_suffix(digits: str, x: str) -> tuple[int, int | None]:
    """The CUDA a package suffix names: cu112 11.2, cu92 9.2, cuda11x and cu11 (nvidia-*-cu11) 11.x."""
    if x or (len(digits) == 2 and digits[0] == "1"):
        return int(digits), None
    return int(digits[:-1]), int(digits[-1])
