"""The orchestration: environments and kernels, running notebooks, collecting and reporting."""
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
