"""The kernels' entry point: ipykernel's own launcher, and a quick exit once the kernel has shut down.

    python -m common.kernel_launcher -f CONNECTION_FILE     (the argv of every rosetta-* kernel)

A kernel asked to shut down after the last cell used to spend most of its stop tearing down its
interpreter: every module, the framework's C++ libraries and their static objects, the model and
the data still in memory (a PyTorch kernel holding a 1000 x 1000 tensor: 0.8 s of a 0.9 s stop on
2 cores). That is the harness's time, not the framework's, and nothing of a run needs it. So, once
the kernel has shut down cleanly, this runs what the kernel and the frameworks registered to run at
exit, waits for their non-daemon threads as Python would, flushes Python's and C's output buffers
(the kernel's log), and leaves with ``os._exit(0)``. A kernel that fails or is stopped by a signal
exits as it always did. Written for any Python from 3.6 on: the older frameworks' kernels run it.
"""
import atexit
import os
import sys
import threading


def _flush() -> None:
    """Python's streams and C's (what libraries printed to the kernel's log through stdio)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a stream already closed has nothing left to write
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # noqa: BLE001 - no C library to ask (not Linux or macOS): Python's streams are flushed
        pass


def leave() -> None:
    """What Python does at a clean exit, but the teardown of its modules and libraries."""
    shutdown = getattr(threading, "_shutdown", None)  # waits for the non-daemon threads, as at any exit
    if shutdown is not None:
        try:
            shutdown()
        except Exception:  # noqa: BLE001 - a thread that fails as it ends does not hold the exit
            pass
    atexit._run_exitfuncs()
    _flush()
    os._exit(0)


def main() -> None:
    if sys.path and sys.path[0] == "":  # as ipykernel_launcher does
        del sys.path[0]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()  # returns once the kernel has shut down cleanly; raises otherwise
    leave()


if __name__ == "__main__":
    main()
