"""The `rosetta` console script: ``harness.cli`` imported and run, with a Ctrl-C during the
imports (numpy, pandas, nbformat, matplotlib: about a second) answered in one line and exit
status 130 instead of a traceback. Only the standard library is imported before that.

A KeyboardInterrupt raised inside an extension module's initialisation can come out as another
error (numpy: "ImportError: PyCapsule_Import could not import module datetime"), so a Ctrl-C
during the imports is only noted, and acted on once they are done."""
import signal
import sys


def main() -> int:
    from harness import output
    output.open_standard_descriptors()
    noted = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: noted.append(number))
    try:
        from harness import cli
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        if noted:
            raise KeyboardInterrupt
        return cli.main()
    except KeyboardInterrupt:  # outside cli.main's own handlers (an Interrupted is handled there)
        output.tolerate_broken()
        print("rosetta: interrupted by SIGINT (Ctrl-C)" + (" while starting; nothing was run." if noted else "."),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
