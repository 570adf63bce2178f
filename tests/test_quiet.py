"""The quiet-machine guard (harness/quiet.py), peak memory and energy (common/resources.py).

The runs are real `rosetta run` processes of a selftest notebook (tests/helpers/rosetta_run.py)
beside a real CPU hog: a Python busy loop started by the test, outside the harness's process tree.
The machine that runs the tests is shared, so each test measures the work already on it first and
sets the busy threshold 0.4 cores above it: a hog of one core passes it, the work already there
does not. Where too little of the machine is left for a hog to show, the test is skipped, saying so.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import selftest
from test_cli_process import start_run

from common import REPOSITORY, record, resources
from harness import kernels, quiet, report, runner

HOG = "import time\nend = time.time() + float(__import__('sys').argv[1])\nwhile time.time() < end: pass\n"

# A notebook body that trains for about 2 s through common.timing's Timer, holding ~250 MB.
BODY = """
import time
import numpy as np
from common import record, timing
timer = timing.Timer()
timer.start()
block = np.ones(250 * 2**20 // 8)  # 250 MiB, every page written
time.sleep(2.0)
timer.epoch_done()
record.write(record_path, record.build(
    framework="Selftest", api="test", benchmark="cifar", accuracy=0.5, timing=timer.summary(1000),
    epochs=10, batch_size=64, train_samples=50000, test_samples=10000, seed=seed))
"""


def _hog(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOG, str(seconds)])


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()
    assert not selftest.alive(process.pid)


def _threshold(hog: bool = True) -> float:
    """0.4 cores above the work already on the machine; for a ``hog`` test, skips where a hog would not show."""
    background = quiet.measure(1.0)
    if background.get("other_cores") is None:
        pytest.skip(f"other processes' CPU use cannot be measured here: {background.get('not_measured')}")
    if hog and background["other_cores"] > (os.cpu_count() or 1) - 0.8:
        pytest.skip(f"the machine is already busy ({background['other_cores']:.2f} of {os.cpu_count()} cores "
                    "used by other processes): a one-core hog would not show above that")
    return round(background["other_cores"] + 0.4, 2)


def _run(tmp_path, monkeypatch, *arguments) -> tuple:
    run = start_run(tmp_path, monkeypatch, BODY, "--results", "out", *arguments)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    found = sorted((tmp_path / "out" / "records").glob("*.json"))
    assert len(found) == 1, output
    return record.read(found[0]), output


def _quiet_record(results: Path, seconds: float, like: dict) -> None:
    """A record of another framework, quiet, slower than the selftest run, on the machine of ``like``
    (its calibration, where it has one: runs of machines that calibrate apart are not ranked together)."""
    record.write(results / "records" / "00000000-000000-quiet-cifar.json", record.build(
        framework="Quiet", api="test", benchmark="cifar", accuracy=0.5, epochs=10, batch_size=64,
        train_samples=50000, test_samples=10000, seed=42, timing={"train_seconds": seconds},
        load={"busy": False, "reason": None, "threshold_cores": 0.25},
        **({"calibration": like["calibration"]} if like.get("calibration") else {})))


def test_a_run_beside_a_cpu_hog_is_recorded_busy_and_the_report_flags_it_and_does_not_rank_it(tmp_path, monkeypatch):
    """Two hogs: the first measurement is taken over the two-thread calibration probe, which leaves one hog
    about two thirds of a core of two, too near the threshold to be sure to pass it. Under two hogs the probe
    itself can outlast the 1 s wait; the harness then says the machine stayed busy instead of waiting."""
    threshold = _threshold()
    hogs = [_hog(120), _hog(120)]
    try:
        done, output = _run(tmp_path, monkeypatch, "--quiet-wait", "1", "--quiet-threshold", str(threshold))
    finally:
        for hog in hogs:
            _stop(hog)
    load = done["load"]
    assert load["busy"] is True, load
    assert load["during"]["other_cores_mean"] > threshold and load["during"]["samples"] >= 2, load
    assert load["before"]["other_cores"] > threshold and len(load["before"]["loadavg"]) == 3, load
    assert load["threshold_cores"] == threshold and load["wait_limit_seconds"] == 1
    said_busy = "waiting up to 1 s for a quiet machine" in output or "the machine stayed busy for" in output
    assert said_busy and "recorded as busy" in output, output
    assert f"other processes used {load['during']['other_cores_mean']:.2f} cores on average" in load["reason"]
    _quiet_record(tmp_path / "out", done["train_seconds"] * 10, done)  # slower, but quiet: it is the one ranked
    readme = report.render(tmp_path / "out").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| Quiet") or line.startswith("| Selftest")]
    assert rows[0].startswith("| Quiet |") and "| 1.00× |" in rows[0], readme  # ranked, first, though slower
    assert rows[1].startswith("| Selftest |") and "| – (busy) |" in rows[1], readme
    assert f"**busy**: other processes used {load['during']['other_cores_mean']:.2f} cores on average" in rows[1]


def test_a_quiet_run_is_not_flagged_and_records_the_kernels_peak_memory(tmp_path, monkeypatch):
    threshold = _threshold(hog=False) + 0.25  # the machine's own work may vary a little meanwhile
    done, output = _run(tmp_path, monkeypatch, "--quiet-wait", "0", "--quiet-threshold", str(threshold))
    load = done["load"]
    during, before = load["during"], load["before"]
    # busy exactly where its own figures pass the threshold: on a quiet machine, never
    assert load["busy"] == (during["other_cores_mean"] > threshold or before["other_cores"] > threshold), load
    if load["busy"]:
        pytest.skip(f"the machine's other work rose past {threshold} cores during the run: {load['reason']}")
    assert "waiting" not in output and load["reason"] is None
    assert done["peak_memory"]["resident_bytes"] > 250 * 2**20, done["peak_memory"]  # the 250 MiB it held
    assert done["peak_memory"]["gpu_allocator_bytes"] is None  # no GPU framework in this kernel
    readme = report.render(tmp_path / "out").read_text()
    assert "**busy**:" not in readme and "(busy)" not in readme and "| 1.00× |" in readme
    setup = [line for line in readme.splitlines() if line.startswith("| Selftest | test |")]
    assert len(setup) == 1 and f"{done['peak_memory']['resident_bytes'] / 1e6:,.0f} MB" in setup[0], readme


def test_a_hog_that_stops_within_the_wait_lets_the_run_start_quiet(tmp_path, monkeypatch):
    """The hogs are stopped once the harness says it is waiting (not on a timer: on a loaded machine the
    run's own start-up can outlast any fixed hog), and the run must then start by itself, quiet. Two hogs:
    the first measurement is taken over the calibration probe, whose two threads leave one hog about two
    thirds of a core of two, under the threshold of 0.65 cores above the machine's own work."""
    threshold = _threshold() + 0.25
    hogs = [_hog(300), _hog(300)]
    lines = []
    try:
        time.sleep(0.5)
        run = start_run(tmp_path, monkeypatch, BODY, "--results", "out", "--quiet-wait", "60",
                        "--quiet-threshold", str(threshold))
        for line in run.stdout:  # the harness flushes each line it says
            lines.append(line)
            if "waiting up to 60 s for a quiet machine" in line:
                time.sleep(1.5)
                for hog in hogs:
                    _stop(hog)
        rest, _ = run.communicate(timeout=120)
    finally:
        for hog in hogs:
            _stop(hog)
    output = "".join(lines) + rest
    assert run.returncode == 0, output
    found = sorted((tmp_path / "out" / "records").glob("*.json"))
    assert len(found) == 1, output
    load = record.read(found[0])["load"]
    assert "waiting up to 60 s for a quiet machine" in output and "quiet after" in output, output
    assert 1.0 <= load["waited_seconds"] < 30, load  # it waited for the hog, and not for the whole minute
    assert load["before"]["other_cores"] <= threshold, load


def test_a_failed_run_records_the_load_and_the_peak_memory_the_harness_saw(tmp_path, monkeypatch):
    selftest.install_kernel(tmp_path, monkeypatch)
    monkeypatch.setattr(kernels, "unavailable_reason", lambda framework: None)
    body = "import numpy as np, time\nblock = np.ones(250 * 2**20 // 8)\ntime.sleep(1.5)\nraise ValueError('broken')"
    framework = selftest.framework(tmp_path / "nb" / "failing.ipynb", body)
    result = runner.execute(framework, "cifar", runner.RunSettings(quiet_wait=0, quiet_threshold=0.25),
                            tmp_path / "results")
    assert result["status"] == "failed" and "ValueError: broken" in result["error"]
    written = record.read(next((tmp_path / "results" / "records").glob("*.json")))
    load = written["load"]
    assert load["threshold_cores"] == 0.25 and load["wait_limit_seconds"] == 0 and load["during"]["samples"] >= 2
    assert load["busy"] == (load["before"]["other_cores"] > 0.25 or load["during"]["other_cores_mean"] > 0.25)
    assert written["peak_memory"]["resident_bytes"] > 250 * 2**20, written["peak_memory"]  # the kernel's VmHWM
    assert written["peak_memory"]["how"].startswith("VmHWM of the run's processes")


def test_records_without_a_busy_flag_and_busy_ones_are_ordered_quiet_first(tmp_path):
    for name, seconds, busy in (("Fast", 1.0, True), ("Slow", 4.0, False), ("Old", 2.0, None)):
        record.write(tmp_path / "records" / f"{name}.json", record.build(
            framework=name, api="test", benchmark="cifar", accuracy=0.5, epochs=10, batch_size=64,
            train_samples=50000, test_samples=10000, seed=42, timing={"train_seconds": seconds},
            **({} if busy is None else {"load": {"busy": busy, "reason": "other processes used 1.20 cores on "
                                                 "average during the run" if busy else None}})))
    readme = report.render(tmp_path).read_text()
    rows = [line.split(" | ")[0][2:] for line in readme.splitlines() if line.startswith("| ") and "×" in line
            or "(busy)" in line]
    assert rows == ["Old", "Slow", "Fast"], readme  # a record from before the guard counts as quiet
    assert "| 2.00× |" in readme and "**busy**: other processes used 1.20 cores on average" in readme


def _load(mean, largest, samples, before=0.0):
    reasons = [f"other processes used {mean:.2f} cores on average during the run"] if mean > 0.25 else []
    if before > 0.25:
        reasons.append(f"other processes used {before:.2f} cores before it")
    return {"busy": bool(reasons), "reason": "; ".join(reasons) or None, "threshold_cores": 0.25,
            "before": {"other_cores": before, "seconds": 0.5},
            "during": {"seconds": 36.7, "other_cores_mean": mean, "other_cores_max": largest, "samples": samples}}


def test_a_sample_of_more_cores_than_the_machine_has_is_left_out_of_an_old_records_load(tmp_path):
    """A record of the meter's old fault (a reaped kernel read as one sample of 17,882 cores): the report
    takes the mean again without it, ranks the run, and says why; a run busy for another reason stays busy."""
    cpu = {"device": "cpu", "cpu": "CPU", "cpu_count": 2}
    for name, seconds, load in (("Faulty", 1.0, _load(241.669, 17882.13, 74)), ("Slow", 4.0, _load(0.02, 0.1, 74)),
                                ("Still busy", 0.5, _load(300.0, 17882.13, 74, before=1.5)),
                                ("Busy", 0.8, _load(1.5, 1.9, 10))):
        record.write(tmp_path / "records" / f"{name}.json", record.build(
            framework=name, api="test", benchmark="cifar", accuracy=0.5, epochs=10, batch_size=64,
            train_samples=50000, test_samples=10000, seed=42, timing={"train_seconds": seconds},
            environment=cpu, load=load))
    readme = report.render(tmp_path).read_text()
    rows = {}
    for line in readme.splitlines():  # the results table's rows (the setup table below repeats the names)
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0][2:], line)
    assert "| 1.00× |" in rows["Faulty"] and "| 4.00× |" in rows["Slow"], readme
    assert ("Load: one sample of 17,882 cores on a 2-core machine, a fault of the meter, left out (0.02 cores on "
            "average otherwise)") in rows["Faulty"] and "busy" not in rows["Faulty"]
    # still busy: before the run (and 59.1 cores during it without the faulty sample), not ranked
    assert "– (busy)" in rows["Still busy"] and "other processes used 1.50 cores before it" in rows["Still busy"]
    assert "59.15 cores on average during the run" in rows["Still busy"]
    # a busy run whose samples are all possible is left as it was recorded
    assert "– (busy)" in rows["Busy"] and "1.50 cores on average" in rows["Busy"] and "fault" not in rows["Busy"]


FAKE_SMI = """#!/bin/sh
# nvidia-smi --query-compute-apps: a process of another user, and the harness itself (its parent)
if [ -n "$FAKE_SMI_FAIL" ]; then
    echo "NVIDIA-SMI has failed because it couldn't communicate with the driver"; exit 9
fi
echo "4242, 1536, /usr/bin/python3"
echo "$PPID, 300, python"
if [ -n "$FAKE_SMI_ALSO" ]; then echo "$FAKE_SMI_ALSO, 100, other"; fi
"""


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "nvidia-smi").write_text(FAKE_SMI)
    (folder / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_other_processes_on_the_gpu_are_listed_and_the_runs_own_left_out(fake_smi):
    found, note = quiet.gpu_others({os.getpid()})
    assert note is None and found == [{"pid": 4242, "used_memory_mib": 1536, "name": "/usr/bin/python3"}]
    load = quiet.RunLoad(0, 1000.0, "cuda")  # no CPU threshold reached: the GPU alone makes it busy
    load.wait()
    load.start()
    done = load.finish()
    assert done["busy"] is True and done["gpu_others"] == found and "pid 4242 (1536 MiB)" in done["reason"]
    record.validate(record.build(framework="F", api="a", benchmark="cifar", status="failed", error="x", epochs=1,
                                 batch_size=1, train_samples=1, test_samples=1, seed=0, load=done))


def test_during_a_run_a_gpu_process_outside_this_machines_process_table_is_noted_not_counted(fake_smi, monkeypatch):
    """nvidia-smi in a container lists host pids: the run's own kernel may appear under a pid that
    /proc here does not have (4242, say); a process that /proc shows and that is not the run's is other work."""
    if Path("/proc/4242").exists():
        pytest.skip("pid 4242 exists here: the fake's unknown pid would be known")
    # a process outside this one's tree: its parent, a shell, ends at once and leaves it to init
    sleeper = int(subprocess.run(["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"], capture_output=True,
                                 text=True, check=True).stdout)
    monkeypatch.setenv("FAKE_SMI_ALSO", str(sleeper))
    try:
        sampler = quiet.Sampler("cuda", interval=0.2)  # rooted at this process: the fake's $PPID is its own
        time.sleep(1.0)
        during = sampler.stop()
    finally:
        os.kill(sleeper, 9)
        deadline = time.monotonic() + 5
        while selftest.alive(sleeper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not selftest.alive(sleeper)
    assert [p["pid"] for p in during["gpu_others"]] == [sleeper], during
    assert during["gpu_note"].startswith("pid 4242 on the GPU is not in this machine's process table"), during


def test_a_failing_or_missing_nvidia_smi_is_not_measured_and_the_run_goes_on(fake_smi, monkeypatch):
    monkeypatch.setenv("FAKE_SMI_FAIL", "1")
    found, note = quiet.gpu_others({os.getpid()})
    assert found is None and note.startswith("not measured: nvidia-smi exited with 9: NVIDIA-SMI has failed")
    load = quiet.RunLoad(0, 1000.0, "cuda")
    load.wait()
    load.start()
    done = load.finish()
    assert done["gpu_others"] is None and done["gpu_note"] == note and done["busy"] is False
    monkeypatch.setenv("PATH", "/nonexistent")
    assert quiet.gpu_others() == (None, "not measured: nvidia-smi not found")


def test_the_harness_and_its_children_are_not_other_work(tmp_path):
    """The same second, two meters: one rooted at this process (the hog is its child: its own
    work), one rooted at a sleeping process the hog is not under (the hog is other work)."""
    sleeper = subprocess.Popen(["sleep", "30"])
    hog = _hog(30)
    try:
        time.sleep(0.3)
        own, outside = quiet.CpuMeter(os.getpid()), quiet.CpuMeter(sleeper.pid)
        started, hogged = time.monotonic(), _jiffies(hog.pid)
        time.sleep(1.5)
        mine, theirs = own.sample()[0], outside.sample()[0]
        hog_cores = (_jiffies(hog.pid) - hogged) / quiet.clock_ticks() / (time.monotonic() - started)
    finally:
        _stop(hog)
        _stop(sleeper)
    assert hog_cores > 0.1, hog_cores  # it ran, however busy the machine
    # the hog's share, counted by the one and not by the other (the same second, give or take a sample's edges)
    assert theirs - mine == pytest.approx(hog_cores, abs=0.15), (mine, theirs, hog_cores)


def _fake_proc(root: Path, busy: int, processes: dict) -> None:
    """A /proc with a ``cpu`` line of ``busy`` user jiffies and ``processes``: pid -> (parent, jiffies)."""
    root.mkdir(exist_ok=True)
    (root / "stat").write_text(f"cpu  {busy} 0 0 100000 0 0 0 0 0 0\n")
    for entry in root.iterdir():
        if entry.name.isdigit() and int(entry.name) not in processes:
            shutil.rmtree(entry)
    for pid, (parent, jiffies) in processes.items():
        (root / str(pid)).mkdir(exist_ok=True)
        (root / str(pid) / "stat").write_text(f"{pid} (p) S {parent} " + "0 " * 9 + f"{jiffies} 0 0 0 0\n")


def test_a_child_reaped_while_the_tree_is_read_is_not_counted_as_other_work(tmp_path, monkeypatch):
    """The kernel (pid 200) ends and the harness (100) reaps it while the meter reads the tree: the
    snapshot holds the harness as it was before the reap and no kernel. Its 70 s belong to the harness."""
    proc = tmp_path / "proc"
    _fake_proc(proc, 10_000, {100: (1, 10), 200: (100, 7_000)})
    meter = quiet.CpuMeter(100, proc=str(proc))
    time.sleep(0.05)
    # 20 jiffies more on the machine, all of them the kernel's; then the reap: the harness's cutime holds them
    _fake_proc(proc, 10_020, {100: (1, 10 + 7_020)})
    stale = {100: (1, 10)}  # what a read just before the reap saw of the harness
    monkeypatch.setattr(quiet, "_processes", lambda proc=quiet.PROC: dict(stale))
    others, _ = meter.sample()
    assert others == pytest.approx(0.0, abs=1e-9), others
    # and work outside the tree still counts: 50 more jiffies on the machine, none of them the harness's
    monkeypatch.setattr(quiet, "_processes", lambda proc=quiet.PROC: {100: (1, 10 + 7_020)})
    _fake_proc(proc, 10_070, {100: (1, 10 + 7_020)})
    time.sleep(0.05)
    others, _ = meter.sample()
    assert others == pytest.approx(0.5 / meter.seconds, rel=1e-6) and others > 1.0


def test_a_last_stretch_of_a_few_milliseconds_is_left_out_and_the_mean_weighs_each_sample_by_its_time(tmp_path):
    proc = tmp_path / "proc"
    _fake_proc(proc, 10_000, {100: (1, 10)})
    meter = quiet.CpuMeter(100, proc=str(proc))
    time.sleep(0.2)
    _fake_proc(proc, 10_010, {100: (1, 10)})  # 0.1 s of other work over 0.2 s
    assert meter.sample()[0] == pytest.approx(0.1 / meter.seconds, rel=1e-6)
    _fake_proc(proc, 10_011, {100: (1, 10)})  # one jiffy at once: hundreds of "cores" over a millisecond
    assert meter.sample(min_seconds=0.1) is None
    time.sleep(0.15)  # the baseline stayed: the next sample covers the jiffy over its whole stretch
    later = meter.sample(min_seconds=0.1)[0]
    assert later == pytest.approx(0.01 / meter.seconds, rel=1e-6) and later < 0.1
    sampler = quiet.Sampler("cpu", interval=60)
    sampler.meter = None  # no further sample: the two below are the run's
    sampler.values = [(0.0, 9.9), (10.0, 0.1)]  # ten cores for 0.1 s of a 10 s run
    during = sampler.stop()["during"]
    assert during["other_cores_mean"] == pytest.approx(0.1, abs=1e-3) and during["other_cores_max"] == 10.0


def _jiffies(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return sum(int(v) for v in text[text.rfind(")") + 2:].split()[11:13])


def _zone(root: Path, name: str, energy, wrap=None, label="package-0") -> None:
    zone = root / name
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "name").write_text(label + "\n")
    if wrap is not None:
        (zone / "max_energy_range_uj").write_text(f"{wrap}\n")


def test_rapl_counters_are_summed_over_the_packages_across_a_wrap_around(tmp_path):
    _zone(tmp_path, "intel-rapl:0", 900_000_000, wrap=1_000_000_000)
    _zone(tmp_path, "intel-rapl:1", 5_000_000, wrap=1_000_000_000, label="package-1")
    _zone(tmp_path, "intel-rapl:0:0", 1, label="core")  # part of package 0: not added twice
    meter = resources.EnergyMeter(str(tmp_path), nvml=False)
    meter.start()
    _zone(tmp_path, "intel-rapl:0", 50_000_000, wrap=1_000_000_000)  # wrapped: 150 J since
    _zone(tmp_path, "intel-rapl:1", 7_000_000, wrap=1_000_000_000, label="package-1")  # 2 J
    meter.mark()
    summary = meter.summary()
    assert summary["cpu_joules"] == pytest.approx(152.0) and summary["cpu_note"] is None
    assert summary["cpu_zones"] == ["package-0", "package-1"]


def test_rapl_that_cannot_be_read_is_not_exposed_with_the_reason(tmp_path):
    absent = resources.EnergyMeter(str(tmp_path / "powercap"), nvml=False)
    absent.start()
    absent.mark()
    assert absent.summary()["cpu_joules"] is None
    assert absent.summary()["cpu_note"] == f"not exposed: {tmp_path / 'powercap'} does not exist (no RAPL driver, " \
                                           "or not visible here)"
    (tmp_path / "intel-rapl:0" / "energy_uj").mkdir(parents=True)  # not a number to read
    unreadable = resources.EnergyMeter(str(tmp_path), nvml=False)
    unreadable.start()
    unreadable.mark()
    assert unreadable.summary()["cpu_joules"] is None
    assert unreadable.summary()["cpu_note"].startswith(f"not exposed: {tmp_path / 'intel-rapl:0'}/energy_uj: ")


def test_the_machines_own_energy_counters_never_stop_the_timer():
    """On this machine, as it is: the timer's summary has energy and memory, figures or reasons."""
    from common import timing
    timer = timing.Timer()
    timer.start()
    timer.epoch_done()
    summary = timer.summary(10)
    energy = summary["energy"]
    assert (energy["cpu_joules"] is None) == (energy["cpu_note"] is not None), energy
    assert (energy["gpu_joules"] is None) == (energy["gpu_note"] is not None), energy
    if not Path(resources.POWERCAP).is_dir():
        assert energy["cpu_note"].startswith("not exposed: /sys/class/powercap does not exist")
    assert summary["peak_memory"]["resident_bytes"] > 10 * 2**20


@pytest.mark.parametrize("load, message", [
    ({"busy": "yes"}, "field load.busy is \"yes\"; expected true or false."),
    ({"busy": True, "during": {"other_cores_mean": -1}}, "field load.during.other_cores_mean is -1; expected a"),
    ({"busy": False, "before": {"loadavg": "high"}}, "field load.before.loadavg is \"high\"; expected a list"),
])
def test_a_malformed_load_is_refused_naming_the_field(load, message):
    built = record.build(framework="F", api="a", benchmark="cifar", status="failed", error="x", epochs=1,
                         batch_size=1, train_samples=1, test_samples=1, seed=0, load=load)
    with pytest.raises(ValueError, match="record: " + message.replace("(", r"\(").replace(".", r"\.")):
        record.validate(built)


def test_the_setup_table_shows_peak_memory_and_energy_of_a_gpu_run(tmp_path):
    gpu = {"device": "cuda", "gpu": "Test GPU", "versions": {"torch": "2.13"}, "python": "3.11"}
    record.write(tmp_path / "records" / "gpu.json", record.build(
        framework="PyTorch", api="test", benchmark="cifar", accuracy=0.5, epochs=10, batch_size=64,
        train_samples=50000, test_samples=10000, seed=42, environment=gpu, timing={
            "train_seconds": 3.0,
            "peak_memory": {"resident_bytes": 3_200_000_000, "gpu_allocator_bytes": 1_500_000_000,
                            "gpu_allocator": "torch.cuda.max_memory_allocated", "gpu_used_bytes": 2_000_000_000},
            "energy": {"cpu_joules": None, "cpu_note": "not exposed: /sys/class/powercap does not exist",
                       "gpu_joules": 567.4, "gpu_note": None}}))
    readme = report.render(tmp_path).read_text()
    setup = [line for line in readme.splitlines() if line.startswith("| PyTorch | test |")]
    assert setup and setup[0].endswith("| 3.2 GB; GPU 1.5 GB allocator peak, 2.0 GB used (NVML) | 567 J GPU |"), readme


FAKE_NVML = r"""
/* A stand-in for libnvidia-ml.so.1: one GPU whose energy counter advances 1500 mJ a read. */
typedef struct { unsigned long long total, free, used; } memory_t;
static unsigned long long energy = 1000000;
int nvmlInit_v2(void) { return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **handle) { *handle = (void *) 1; return index == 0 ? 0 : 2; }
int nvmlDeviceGetHandleByUUID(const char *uuid, void **handle) { *handle = (void *) 1; return 0; }
int nvmlDeviceGetTotalEnergyConsumption(void *handle, unsigned long long *value) { energy += 1500; *value = energy; return 0; }
int nvmlDeviceGetMemoryInfo(void *handle, memory_t *memory) {
    memory->total = 80000000000ULL; memory->used = 2000000000ULL; memory->free = memory->total - memory->used; return 0;
}
"""


def test_nvml_energy_and_used_memory_are_read_through_the_driver_library(tmp_path):
    """A fake libnvidia-ml.so.1 (compiled here) found through LD_LIBRARY_PATH by a fresh Python:
    the timer's summary has the GPU's energy over the training and the memory used on it."""
    source = tmp_path / "nvml.c"
    source.write_text(FAKE_NVML)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in NVML library")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(tmp_path / "libnvidia-ml.so.1"), str(source)], check=True)
    script = ("import json; from common import timing\n"
              "timer = timing.Timer(); timer.start(); timer.epoch_done(); timer.epoch_done()\n"
              "print(json.dumps(timer.summary(10)))")
    environment = {**os.environ, "LD_LIBRARY_PATH": str(tmp_path), "PYTHONPATH": str(REPOSITORY)}
    environment.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                          check=True, cwd=tmp_path)
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["energy"]["gpu_joules"] == pytest.approx(3.0) and summary["energy"]["gpu_note"] is None
    assert summary["energy"]["gpu_used_bytes_max"] == 2_000_000_000
    assert summary["peak_memory"]["gpu_used_bytes"] == 2_000_000_000


@pytest.mark.parametrize("variable, value, expected", [
    ("ROSETTA_QUIET_WAIT", "lots", "ROSETTA_QUIET_WAIT='lots': expected the seconds a run waits for a quiet machine"),
    ("ROSETTA_QUIET_THRESHOLD", "-1", "ROSETTA_QUIET_THRESHOLD='-1': expected the cores other processes may use"),
])
def test_a_quiet_setting_in_the_environment_that_is_not_a_number_is_one_line(tmp_path, monkeypatch, capsys,
                                                                              variable, value, expected):
    from harness import cli
    monkeypatch.setenv(variable, value)
    assert cli.main(["run", "pytorch", "--results", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("rosetta: " + expected) and error.count("\n") == 1, error
    assert not (tmp_path / "out" / "records").exists()  # nothing started


def test_the_first_quiet_measurement_is_taken_while_the_calibration_runs(monkeypatch):
    """On a quiet machine the probe runs once, inside the one measurement window (which it lengthens),
    so waiting and calibrating cost one window, not two."""
    calls = []

    def probe():
        calls.append(time.monotonic())
        time.sleep(0.7)  # the probe's own process is the harness's: never counted as other work
        return "probed"

    found = quiet.wait_for_quiet(limit=5, threshold=1000.0, probe=probe)
    assert found["probe"] == "probed" and len(calls) == 1
    assert found["before"]["seconds"] >= 0.7 and "during" not in found["before"]
    assert found["waited_seconds"] < 1.1  # not the probe's 0.7 s and a window of 0.5 s after it


def test_a_probe_that_saw_a_busy_machine_runs_again_once_the_wait_is_over(monkeypatch):
    busy = iter([True, True, False])
    measured = []

    def fake_measure(seconds=quiet.WINDOW, during=None):
        found = {"other_cores": 2.0 if next(busy) else 0.0, "steal_cores": 0.0, "loadavg": [0, 0, 0],
                 "seconds": seconds}
        if during is not None:
            found["during"] = during()
        measured.append(during is not None)
        return found

    probes = iter(["on a busy machine", "on a quiet one"])
    monkeypatch.setattr(quiet, "measure", fake_measure)
    monkeypatch.setattr(quiet.time, "sleep", lambda seconds: None)
    found = quiet.wait_for_quiet(limit=60, threshold=0.25, probe=lambda: next(probes))
    assert measured == [True, False, False] and found["probe"] == "on a quiet one"
    assert found["before"]["other_cores"] == 0.0


def test_a_rows_notes_read_as_separate_sentences(tmp_path):
    """Two notes on one row (a meter fault left out, a probe off the table's calibration) are two
    sentences, not one run-on line."""
    cpu = {"device": "cpu", "cpu": "CPU", "cpu_count": 2}
    for name, gflops, load in (("Faulty", 60.0, _load(241.669, 17882.13, 74)), ("A", 100.0, _load(0.02, 0.1, 74)),
                               ("B", 100.0, _load(0.02, 0.1, 74))):
        record.write(tmp_path / "records" / f"{name}.json", record.build(
            framework=name, api="test", benchmark="cifar", accuracy=0.5, epochs=10, batch_size=64,
            train_samples=50000, test_samples=10000, seed=42, timing={"train_seconds": 1.0},
            environment=cpu, load=load,
            calibration={"device": "cpu", "threads": 2, "gflops": gflops, "gbps": 20.0, "machine": "m"}))
    readme = report.render(tmp_path).read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| Faulty |"))
    assert "(0.02 cores on average otherwise). Probe off this table's calibration" in row, row
