"""`rosetta agree`: every framework on one configuration with several seeds, and how its
accuracies compare with PyTorch's.

One step of parity proves the models equal; a table of accuracies is what readers take as the
proof. This runs each framework's notebook once per seed (the seed sets the shared iterator's
order and each framework's initial weights and dropout masks), all on the same data, sizes
and device, into ``results/agreement/``, and writes ``results/agreement/README.md``: each
framework's mean and range of test accuracy beside the reference framework's, flagged where
the means differ by more than :data:`THRESHOLD`. It is a benchmark, not a test.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from harness import guard

REFERENCE = "PyTorch"
THRESHOLD = 0.02  # two points of accuracy
DEFAULT_SEEDS = 5
FIRST_SEED = 42


def agreement_dir(results: Path) -> Path:
    return results / "agreement"


def seeds(count: int, first: int = FIRST_SEED) -> list[int]:
    if count < 2:
        raise ValueError(f"--seeds must be 2 or more (a range needs two runs), got {count}")
    return list(range(first, first + count))


@dataclass(frozen=True)
class Configuration:
    """What every run of one agreement table shares."""

    benchmark: str
    epochs: int
    train_samples: int
    test_samples: int
    device: str
    title: str = ""

    def matches(self, found: dict) -> bool:
        return (found.get("benchmark") == self.benchmark and found.get("epochs") == self.epochs
                and found.get("train_samples") == self.train_samples
                and found.get("test_samples") == self.test_samples
                and (found.get("environment") or {}).get("device") == self.device)

    def describe(self) -> str:
        return (f"{self.epochs} epoch(s) on the first {self.train_samples:,} training samples, tested on the "
                f"first {self.test_samples:,}, on the {self.device.upper()}")


def _latest(records: list[dict], configuration: Configuration, wanted_seeds: list[int]) -> dict:
    """{(framework label, seed): record}: the ok records of this configuration and these seeds;
    where a seed ran more than once, its latest record (by timestamp)."""
    latest: dict[tuple[str, int], dict] = {}
    for found in records:
        if found.get("status") != "ok" or not configuration.matches(found) or found.get("seed") not in wanted_seeds:
            continue
        key = (found["framework"], found["seed"])
        if key not in latest or str(found.get("timestamp", "")) >= str(latest[key].get("timestamp", "")):
            latest[key] = found
    return latest


def collect(records: list[dict], configuration: Configuration, wanted_seeds: list[int]) -> dict:
    """{framework label: {seed: test accuracy}} from the ok records of this configuration and
    these seeds; where a seed ran more than once, its latest record (by timestamp) counts."""
    collected: dict[str, dict[int, float]] = {}
    for (framework, seed), found in sorted(_latest(records, configuration, wanted_seeds).items()):
        collected.setdefault(framework, {})[seed] = float(found["test_accuracy"])
    return collected


def commits(records: list[dict], configuration: Configuration, wanted_seeds: list[int]) -> dict:
    """{framework label: the sorted commits its counted runs were made at} (unknown: '?')."""
    found_at: dict[str, set] = {}
    for (framework, _), found in _latest(records, configuration, wanted_seeds).items():
        found_at.setdefault(framework, set()).add((found.get("environment") or {}).get("git_commit") or "?")
    return {framework: sorted(at) for framework, at in found_at.items()}


def failures(records: list[dict], configuration: Configuration, wanted_seeds: list[int], collected: dict) -> list[str]:
    """'framework, seed s: status: message' for each wanted run with no ok record."""
    missing = []
    for found in records:
        if (found.get("status") != "ok" and configuration.matches(found) and found.get("seed") in wanted_seeds
                and found.get("seed") not in collected.get(found["framework"], {})):
            message = str(found.get("error") or "").strip().splitlines()
            missing.append(f"{found['framework']}, seed {found['seed']}: {found['status']}"
                           + (f": {message[-1][:200]}" if message else ""))
    return sorted(set(missing))


def summary(collected: dict, reference: str = REFERENCE, threshold: float = THRESHOLD) -> list[dict]:
    """One row per framework: seeds, mean, min, max, and the difference from the reference's mean."""
    if reference not in collected:
        raise ValueError(f"no ok run of {reference}, the reference framework: nothing to compare with")
    base = statistics.mean(collected[reference].values())
    rows = []
    for framework, accuracies in collected.items():
        values = list(accuracies.values())
        mean = statistics.mean(values)
        rows.append({"framework": framework, "seeds": len(values), "per_seed": dict(sorted(accuracies.items())),
                     "mean": mean, "min": min(values),
                     "max": max(values), "difference": mean - base,
                     "flagged": framework != reference and abs(mean - base) > threshold})
    return sorted(rows, key=lambda row: (row["framework"] != reference, row["framework"]))


def render_section(rows: list[dict], configuration: Configuration, missing: list[str],
                   reference: str = REFERENCE, made_at: dict | None = None, commit: str | None = None) -> list[str]:
    """The section's table; ``made_at`` ({framework: commits}) names the rows whose runs were
    made at another commit than ``commit``, this call's."""
    lines = [f"## {configuration.title or configuration.benchmark}", "", configuration.describe() + ".", "",
             f"| Framework | Seeds | Mean | Range | vs {reference} (points) | | Per seed |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        flag = "**differs**" if row["flagged"] else ""
        versus = "–" if row["framework"] == reference else f"{row['difference'] * 100:+.1f}"
        per_seed = " · ".join(f"{accuracy * 100:.1f}" for accuracy in row["per_seed"].values())
        lines.append(f"| {row['framework']} | {row['seeds']} | {row['mean'] * 100:.1f} | "
                     f"{row['min'] * 100:.1f} – {row['max'] * 100:.1f} | {versus} | {flag} | {per_seed} |")
    elsewhere = {framework: at for framework, at in (made_at or {}).items() if at != [commit]}
    if elsewhere:
        lines += ["", "Rows whose runs were made at another commit than this call's:", ""] + [
            f"- {framework}: {', '.join(c[:12] for c in at)}" for framework, at in sorted(elsewhere.items())]
    if missing:
        lines += ["", "Runs without an ok record (not in the table):", ""] + [f"- {m}" for m in missing]
    flagged = [row["framework"] for row in rows if row["flagged"]]
    lines += ["", (f"Flagged: {', '.join(flagged)}; docs/parity.md says what is known about each."
                   if flagged else f"No row's mean differs from {reference}'s by more than {THRESHOLD * 100:g} points."),
              ""]
    return lines


def render(sections: list[list[str]], wanted_seeds: list[int], how: str, reference: str = REFERENCE,
           threshold: float = THRESHOLD) -> str:
    lines = ["# Agreement across seeds", "",
             "Generated by `rosetta agree`; do not edit by hand. Every framework on one configuration, once "
             f"for each of the seeds {', '.join(map(str, wanted_seeds))}: the seed sets the shared iterator's "
             "order and each framework's initial weights and dropout masks. Test accuracy in percent (per seed "
             "in seed order); a row "
             f"is flagged where its mean differs from {reference}'s by more than {threshold * 100:g} points.",
             "", how, ""]
    for section in sections:
        lines += section
    return "\n".join(lines)


def write(results: Path, records: list[dict], configurations: list[Configuration], wanted_seeds: list[int],
          how: str, commit: str | None = None) -> Path:
    """results/agreement/README.md: one section per configuration (benchmark); ``commit`` is
    this call's, against which each row's runs are compared."""
    sections = []
    for configuration in configurations:
        collected = collect(records, configuration, wanted_seeds)
        missing = failures(records, configuration, wanted_seeds, collected)
        sections.append(render_section(summary(collected), configuration, missing,
                                       made_at=commits(records, configuration, wanted_seeds), commit=commit))
    path = agreement_dir(results) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    guard.replace_text(path, render(sections, wanted_seeds, how))  # a full disk keeps the old table whole
    return path
