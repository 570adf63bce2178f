"""The harness's own output, made unable to stop it.

A run's log often goes through a pipe (``rosetta run ... 2>&1 | tee log``) or to a terminal. When
the reader dies (``tee`` ends with the same Ctrl-C) or the terminal goes (SIGHUP), a write fails
with EPIPE or EIO. Output is only a report of the work: the record, the table and the exit status
must not depend on it. ``tolerate_broken()`` wraps ``sys.stdout`` and ``sys.stderr`` so that a
write or flush that fails silences that stream for good (its file descriptor is pointed at
/dev/null, so that even the interpreter's last flush at exit succeeds) and the harness goes on.
"""
from __future__ import annotations

import os
import sys


class Tolerant:
    """A text stream whose writes never raise: after the first failure it drops what it is given."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def _silence(self) -> None:
        self.broken = True
        try:
            descriptor = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, descriptor)  # what is still buffered, and the final flush, go nowhere
            finally:
                os.close(null)
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):  # EPIPE, EIO, a closed file
                self._silence()
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._silence()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def tolerate_broken() -> tuple:
    """Wraps ``sys.stdout`` and ``sys.stderr`` (where present and not wrapped yet); returns what
    they were, for ``restore``."""
    previous = (sys.stdout, sys.stderr)
    if sys.stdout is not None and not isinstance(sys.stdout, Tolerant):
        sys.stdout = Tolerant(sys.stdout)
    if sys.stderr is not None and not isinstance(sys.stderr, Tolerant):
        sys.stderr = Tolerant(sys.stderr)
    return previous


def restore(previous: tuple) -> None:
    sys.stdout, sys.stderr = previous


def open_standard_descriptors() -> None:
    """Points any of file descriptors 0, 1 and 2 that is closed at /dev/null, so that no file the
    harness opens later takes its number (and a child's output with it)."""
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if null != descriptor:
                os.dup2(null, descriptor)
                os.close(null)
