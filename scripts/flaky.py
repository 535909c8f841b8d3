"""Rerun the `stochastic` tests N times and report each one's pass rate: a test under 100% is flaky.

Each round is a fresh pytest process (no state carried between rounds) that writes a JUnit XML report; the
table counts passes per test. Exits 1 if any test failed in any round, 2 if a round could not run at all.
Usage: `make test-flaky N=10` or `python scripts/flaky.py --rounds 10 -- -k overload`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

# The default suite's own exclusions (pyproject addopts), since a second -m replaces the first.
MARKER = "stochastic and not slow and not gpu and not e2e"
PYTEST_NO_TESTS = 5


def outcomes(report: Path) -> dict[str, bool]:
    """Test id -> passed, for every test of one JUnit XML report that ran (skipped ones are left out)."""
    results: dict[str, bool] = {}
    for case in ET.parse(report).iter("testcase"):
        tags = {child.tag for child in case}
        if "skipped" in tags:
            continue
        test_id = f"{case.get('classname')}::{case.get('name')}"
        results[test_id] = results.get(test_id, True) and not tags & {"failure", "error"}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", "-n", type=int, default=5, help="pytest runs (default 5)")
    parser.add_argument("--marker", "-m", default=MARKER, help=f"tests to rerun (default: {MARKER!r})")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest, after --")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    passes: Counter[str] = Counter()
    runs: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="slipway-flaky-") as tmp:
        for i in range(1, args.rounds + 1):
            report = Path(tmp) / f"round-{i}.xml"
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", args.marker]
            console.rule(f"round {i}/{args.rounds}")
            code = subprocess.call([*command, f"--junitxml={report}", *args.pytest_args])
            if not report.is_file() or code == PYTEST_NO_TESTS:
                console.print(f"[red]round {i}: pytest exited {code} without running any test")
                return 2
            for test_id, passed in outcomes(report).items():
                runs[test_id] += 1
                passes[test_id] += passed
    table = Table(title=f"pass rate over {args.rounds} rounds")
    table.add_column("test")
    table.add_column("passed", justify="right")
    table.add_column("rate", justify="right")
    for test_id in sorted(runs, key=lambda t: (passes[t] / runs[t], t)):
        rate = passes[test_id] / runs[test_id]
        style = "" if rate == 1 else "bold red"
        table.add_row(test_id, f"{passes[test_id]}/{runs[test_id]}", f"{rate:.0%}", style=style)
    Console().print(table)
    return 0 if all(passes[t] == runs[t] for t in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
