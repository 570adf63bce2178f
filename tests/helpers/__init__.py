"""What the tests share beyond conftest's fixtures: parsers, readers and stand-in programs."""
