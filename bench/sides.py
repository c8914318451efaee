"""Variants of a bench side by side: each checkout, database and number of senders asked
for, run as a process of its own in turns, and each figure of their outputs with its ratio to
the first variant's (bench/cycle.py; bench/run.py runs its own variants with ``run_variant``)."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from match import REPO  # bench/match.py

CYCLE = Path(__file__).resolve().with_name("cycle.py")


def backend_name(url: str) -> str:
    return "sqlite" if url == "sqlite" else sa.engine.make_url(url).get_backend_name()


_PHASE = re.compile(r"^  (\S.*?)\s+([\d.]+) s(?:  \(CPU ([\d.]+) s\))?$", re.MULTILINE)
_RATE = re.compile(r"^send: .* ([\d,]+) messages/s", re.MULTILINE)
_RSS = re.compile(r"^peak RSS: ([\d,]+) MB", re.MULTILINE)
_LARGEST = re.compile(r"^peak RSS of the largest forked process \(wait4\): ([\d,]+) MB", re.M)
_STEP_RSS = re.compile(r"^  (\S.*?)\s+([\d.]+) MB$", re.MULTILINE)


@dataclass(frozen=True)
class Variant:
    name: str
    checkout: Path
    args: tuple[str, ...]


def variants(args: argparse.Namespace, rest: list[str]) -> list[Variant]:
    """Every checkout × database × number of senders asked for, the first the reference."""
    checkouts = [("baseline", args.baseline.resolve())] if args.baseline else []
    checkouts.append(("this checkout", REPO))
    found = []
    for label, checkout in checkouts:
        for database in args.database:
            for senders in args.senders:
                parts = [label] if args.baseline else []
                if len(args.database) > 1:
                    parts.append(backend_name(database))
                if len(args.senders) > 1:
                    parts.append(f"{senders} sender{'s' * (senders != 1)}")
                extra = ("--database", database, "--senders", str(senders))
                found.append(Variant(", ".join(parts), checkout, (*rest, *extra)))
    return found


def run_variant(variant: Variant, script: Path | None = None) -> str:
    """This script (or ``script``) on the variant's checkout, with its own environment when
    it has one."""
    venv = variant.checkout / ".venv" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable
    env = {**os.environ, "PYTHONPATH": str(variant.checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    # A fixed string hash: the interests are drawn from sets of words (see bench/match.py).
    env.setdefault("PYTHONHASHSEED", "0")
    command = [python, str(script or CYCLE), *variant.args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{variant.name} failed:\n{done.stdout}{done.stderr[-3000:]}")
    return done.stdout


def figures(output: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for name, seconds, cpu in _PHASE.findall(output):
        found[name] = float(seconds)
        if cpu:
            found[f"{name} (CPU)"] = float(cpu)
    rate = _RATE.search(output)
    if rate:
        found["messages/s"] = float(rate.group(1).replace(",", ""))
    rss = _RSS.search(output)
    if rss:
        found["peak RSS, MB"] = float(rss.group(1).replace(",", ""))
    largest = _LARGEST.search(output)
    if largest:
        found["peak RSS of the largest forked process, MB"] = float(largest.group(1))
    for name, megabytes in _STEP_RSS.findall(output):
        found[f"{name}, MB"] = float(megabytes)
    return found


def side_by_side(args: argparse.Namespace, rest: list[str]) -> None:
    """Each variant in turns, ``rounds`` times; then the figures side by side."""
    runs = variants(args, rest)
    found: dict[str, list[dict[str, float]]] = {v.name: [] for v in runs}
    for turn in range(1, args.rounds + 1):
        for variant in runs:
            output = run_variant(variant)
            print(f"--- round {turn}, {variant.name}: {variant.checkout}\n{output}", flush=True)
            found[variant.name].append(figures(output))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for turn in range(args.rounds):
        table(f"round {turn + 1}", runs, {name: rounds[turn] for name, rounds in found.items()})
    if args.rounds > 1:
        medians = {
            name: {k: statistics.median(r[k] for r in rounds if k in r) for k in rounds[0]}
            for name, rounds in found.items()
        }
        table(f"median of {args.rounds} rounds", runs, medians)


def table(title: str, runs: list[Variant], found: dict[str, dict[str, float]]) -> None:
    """Every figure of any variant, one row each, with its ratio to the first variant's."""
    first = runs[0].name
    names = [v.name for v in runs]
    head = " | ".join(names) + "".join(f" | {n} / {first}" for n in names[1:])
    print(f"\n{title}\n| step | {head} |\n|{' --- |' * (1 + 2 * len(names) - 1)}")
    steps = list(dict.fromkeys(step for name in names for step in found[name]))
    for step in steps:
        values = [found[n].get(step) for n in names]
        unit = "" if step == "messages/s" or step.endswith("MB") else " s"
        cells = " | ".join("-" if v is None else f"{v:,.2f}{unit}" for v in values)
        reference = values[0]
        ratios = "".join(
            f" | {v / reference:.2f}x" if v is not None and reference else " | -"
            for v in values[1:]
        )
        print(f"| {step} | {cells}{ratios} |")
