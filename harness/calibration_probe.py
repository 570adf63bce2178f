"""The calibration probe: how fast this machine multiplies float32 matrices and copies memory.

    python calibration_probe.py --device cpu
    python calibration_probe.py --device cuda [--backend auto|torch|cupy|jax]

Run by ``harness/calibration.py`` in a process of its own, with the run's thread variables set
before NumPy (or the GPU library) loads and reads them. Prints one JSON line: {"gflops", "gbps",
"how"} or {"not_measured": why}. It imports nothing of this repository and is written for any
Python from 3.5 on (no f-strings), since on a GPU it runs in a framework's interpreter.

CPU: NumPy, a 512 x 512 float32 matrix product (2 * 512^3 FLOPs), timed as many products at a time
as fill 25 ms (one product can take 3 ms, less than the scheduler's slice: a product timed alone can finish
before other work on the machine gets its turn, and miss it), the median of 5 timings after a warm-up;
a copy of 64 MiB of float32 (``np.copyto``), the median of 5 after a warm-up that also touches the
pages. GB/s counts the bytes read and the bytes written (2 x 64 MiB per copy), as STREAM's copy
does. GPU: the same on the device through torch, else CuPy, else JAX, at 4096 x 4096 and 256 MiB
(the CPU's sizes take a GPU microseconds, which would time the launch, not the device), the device
synchronised before each clock reading; float32 arithmetic (TF32 off).
"""
import json
import sys
import time

CPU_N, CPU_MATMUL_REPEATS, CPU_MATMUL_SECONDS = 512, 5, 0.025
GPU_N, GPU_MATMUL_REPEATS = 4096, 7
CPU_COPY_MIB, GPU_COPY_MIB, COPY_REPEATS = 64, 256, 5


def median_time(step, repeats, synchronise=None):
    """The median of ``repeats`` timings of ``step()``, after one untimed call (the warm-up);
    ``synchronise()`` waits for the device before each clock reading. The median, not the best: a
    machine that other work slows most of the time calibrates slow, not at its one lucky moment."""
    step()
    if synchronise:
        synchronise()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        if synchronise:
            synchronise()
        times.append(time.perf_counter() - started)
    times.sort()
    middle = len(times) // 2
    return times[middle] if len(times) % 2 else (times[middle - 1] + times[middle]) / 2


def rates(n, matmul_seconds, copied_bytes, copy_seconds):
    return 2.0 * n ** 3 / matmul_seconds / 1e9, 2.0 * copied_bytes / copy_seconds / 1e9


def describe(library, n, matmul_repeats, mib, extra="", batch=1):
    per = " timings of {} products".format(batch) if batch > 1 else ""
    return ("{} {}x{} float32 matmul, median of {}{}; {} MiB float32 copy, median of {}, "
            "GB/s counting bytes read and written{}").format(library, n, n, matmul_repeats, per, mib, COPY_REPEATS,
                                                             extra)


def cpu():
    import numpy as np
    rng = np.random.RandomState(0)
    a, b = rng.rand(CPU_N, CPU_N).astype(np.float32), rng.rand(CPU_N, CPU_N).astype(np.float32)
    c = np.empty_like(a)
    np.dot(a, b, out=c)  # the first product loads the BLAS and starts its threads
    started = time.perf_counter()
    np.dot(a, b, out=c)
    batch = max(1, min(64, int(CPU_MATMUL_SECONDS / max(time.perf_counter() - started, 1e-6)) + 1))

    def products():
        for _ in range(batch):
            np.dot(a, b, out=c)

    matmul = median_time(products, CPU_MATMUL_REPEATS) / batch
    count = CPU_COPY_MIB * 2 ** 20 // 4
    source, target = np.ones(count, dtype=np.float32), np.empty(count, dtype=np.float32)
    copy = median_time(lambda: np.copyto(target, source), COPY_REPEATS)
    gflops, gbps = rates(CPU_N, matmul, count * 4, copy)
    blas = ""
    try:
        blas = " ({})".format(np.__config__.CONFIG["Build Dependencies"]["blas"]["name"])
    except Exception:  # noqa: BLE001 - NumPy before 1.25 has no CONFIG: the version says enough
        pass
    return {"gflops": gflops, "gbps": gbps,
            "how": describe("NumPy {}{}".format(np.__version__, blas), CPU_N, CPU_MATMUL_REPEATS, CPU_COPY_MIB,
                    batch=batch)}


def gpu_torch():
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("torch {} sees no CUDA device".format(torch.__version__))
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    a = torch.rand(GPU_N, GPU_N, device=device, dtype=torch.float32)
    b = torch.rand(GPU_N, GPU_N, device=device, dtype=torch.float32)
    c = torch.empty_like(a)
    matmul = median_time(lambda: torch.matmul(a, b, out=c), GPU_MATMUL_REPEATS, torch.cuda.synchronize)
    count = GPU_COPY_MIB * 2 ** 20 // 4
    source = torch.ones(count, device=device, dtype=torch.float32)
    target = torch.empty_like(source)
    copy = median_time(lambda: target.copy_(source), COPY_REPEATS, torch.cuda.synchronize)
    gflops, gbps = rates(GPU_N, matmul, count * 4, copy)
    return {"gflops": gflops, "gbps": gbps, "gpu": torch.cuda.get_device_name(0),
            "how": describe("torch {} on {}".format(torch.__version__, torch.cuda.get_device_name(0)),
                            GPU_N, GPU_MATMUL_REPEATS, GPU_COPY_MIB, "; TF32 off")}


def gpu_cupy():
    import cupy
    if cupy.cuda.runtime.getDeviceCount() < 1:
        raise RuntimeError("CuPy {} sees no CUDA device".format(cupy.__version__))
    synchronise = cupy.cuda.runtime.deviceSynchronize
    a = cupy.random.rand(GPU_N, GPU_N, dtype=cupy.float32)
    b = cupy.random.rand(GPU_N, GPU_N, dtype=cupy.float32)
    c = cupy.empty_like(a)
    matmul = median_time(lambda: cupy.matmul(a, b, out=c), GPU_MATMUL_REPEATS, synchronise)
    count = GPU_COPY_MIB * 2 ** 20 // 4
    source = cupy.ones(count, dtype=cupy.float32)
    target = cupy.empty_like(source)
    copy = median_time(lambda: cupy.copyto(target, source), COPY_REPEATS, synchronise)
    gflops, gbps = rates(GPU_N, matmul, count * 4, copy)
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return {"gflops": gflops, "gbps": gbps, "gpu": name,
            "how": describe("CuPy {} on {}".format(cupy.__version__, name), GPU_N, GPU_MATMUL_REPEATS, GPU_COPY_MIB,
                            "; TF32 off")}


def gpu_jax():
    import jax
    import jax.numpy as jnp
    devices = [d for d in jax.devices() if d.platform == "gpu"]
    if not devices:
        raise RuntimeError("jax {} sees no GPU (its devices: {})".format(
            jax.__version__, ", ".join(str(d) for d in jax.devices())))
    device = devices[0]
    a = jax.device_put(jnp.ones((GPU_N, GPU_N), dtype=jnp.float32), device)
    b = jax.device_put(jnp.ones((GPU_N, GPU_N), dtype=jnp.float32), device)
    product = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
    state = {}

    def synchronise():
        state["out"].block_until_ready()

    def multiply():
        state["out"] = product(a, b)

    matmul = median_time(multiply, GPU_MATMUL_REPEATS, synchronise)
    count = GPU_COPY_MIB * 2 ** 20 // 4
    source = jax.device_put(jnp.ones(count, dtype=jnp.float32), device)
    # a fresh buffer, one read and one write of every byte: XLA would fold x + 0 into x, and JAX may
    # hand back the input of a jitted identity without copying it
    duplicate = jax.jit(lambda x: x + 1.0)

    def copy_step():
        state["out"] = duplicate(source)

    copy = median_time(copy_step, COPY_REPEATS, synchronise)
    gflops, gbps = rates(GPU_N, matmul, count * 4, copy)
    name = getattr(device, "device_kind", str(device))
    return {"gflops": gflops, "gbps": gbps, "gpu": name,
            "how": describe("jax {} on {}".format(jax.__version__, name), GPU_N, GPU_MATMUL_REPEATS, GPU_COPY_MIB,
                            "; precision HIGHEST, the copy a jitted x + 1")}


BACKENDS = (("torch", gpu_torch), ("cupy", gpu_cupy), ("jax", gpu_jax))


def gpu(backend="auto"):
    """The first of torch, CuPy and JAX that this interpreter has (or only ``backend``) measures the GPU."""
    tried = []
    for name, measure in BACKENDS:
        if backend not in ("auto", name):
            continue
        try:
            __import__(name)
        except ImportError as error:
            tried.append("{}: not importable ({})".format(name, error))
            continue
        try:
            return measure()
        except Exception as error:  # noqa: BLE001 - the next library may still measure it
            tried.append("{}: {}: {}".format(name, type(error).__name__, error))
    if not tried:
        return {"not_measured": "no GPU backend named {!r} (expected auto, torch, cupy or jax)".format(backend)}
    return {"not_measured": "no GPU library here could measure the device (" + "; ".join(tried) + ")"}


def main(arguments):
    device, backend = "cpu", "auto"
    for index, argument in enumerate(arguments):
        if argument == "--device" and index + 1 < len(arguments):
            device = arguments[index + 1]
        if argument == "--backend" and index + 1 < len(arguments):
            backend = arguments[index + 1]
    try:
        found = cpu() if device == "cpu" else gpu(backend)
    except Exception as error:  # noqa: BLE001 - said, not raised: the run goes on without a calibration
        found = {"not_measured": "{}: {}".format(type(error).__name__, error)}
    print(json.dumps(found))
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
