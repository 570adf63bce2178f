"""The orchestration: environments and kernels, running notebooks, collecting and reporting."""
