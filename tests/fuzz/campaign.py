"""A fuzz campaign: generate programs and check the resume property on each.

    uvx nox -s fuzz -- --programs 2000 --seed 1
    python tests/fuzz/campaign.py --programs 200 --seed 5 --crash-points 20

Every crash point of every program is checked unless ``--crash-points`` caps them (a
seeded sample). On the first failure the program is shrunk and printed, with the crash
point, as a ready-to-paste regression test; the exit code is 1. At the end a tally of
the shapes the campaign covered is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parents[1] / "packages" / "durably" / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from fuzzgen import SHAPES, Chooser, generate  # noqa: E402
from fuzzharness import Case, Checker, Report, regression_test, shrink  # noqa: E402


def check_program(
    seed: int, crash_points: int | None, forks: int | None, directory: Path, max_llm_calls: int
) -> tuple[set[str], Report]:
    """Generate the program of ``seed`` and check it (in a worker process)."""
    generated = generate(Chooser(seed), max_llm_calls=max_llm_calls)
    case = Case.create(generated, directory / f"p{seed}")
    checker = Checker(case, max_crash_points=crash_points, forks=forks, seed=seed)
    return set(generated.shapes), asyncio.run(checker.check())


def run_campaign(
    programs: int,
    seed: int,
    *,
    crash_points: int | None,
    forks: int | None,
    directory: Path,
    jobs: int = 1,
    max_llm_calls: int = 12,
    out: Any = print,
) -> tuple[Counter[str], Report, int]:
    """Check ``programs`` programs from seeds ``seed, seed+1, ...`` in ``jobs`` processes;
    return the shape tally (programs per shape), the summed report and the number of
    failing programs (each printed, shrunk, as a regression test)."""
    tally: Counter[str] = Counter()
    total = Report()
    failing = 0
    seeds = range(seed, seed + programs)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = pool.map(
            check_program,
            seeds,
            [crash_points] * programs,
            [forks] * programs,
            [directory] * programs,
            [max_llm_calls] * programs,
            chunksize=4,
        )
        for done, (program_seed, (shapes, report)) in enumerate(
            zip(seeds, results, strict=True), start=1
        ):
            if done % 50 == 0:
                out(f"... {done} programs checked, {failing} failing", flush=True)
            tally.update(shapes)
            total.crash_points += report.crash_points
            total.stream_crashes += report.stream_crashes
            total.double_crashes += report.double_crashes
            total.forks += report.forks
            if not report.failures:
                continue
            failing += 1
            failure = report.failures[0]
            out(f"program seed {program_seed}: {failure}", flush=True)
            small = shrink(
                generate(Chooser(program_seed), max_llm_calls=max_llm_calls),
                directory / f"shrink{program_seed}",
                budget=120,
            )
            out(f"shrunk to {len(small.choices)} choices; its responses:")
            for key, responses in small.script.items():
                for response in responses:
                    out(f"--- {key}\n{response}")
            out(regression_test(small, failure), flush=True)
            total.failures.append(failure)
    return tally, total, failing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--programs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--crash-points",
        type=int,
        default=None,
        help="check at most this many crash points per program (default: all)",
    )
    parser.add_argument(
        "--forks",
        type=int,
        default=None,
        help="fork at most this many LLM calls per program (default: all)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: one per CPU)",
    )
    parser.add_argument(
        "--max-llm-calls",
        type=int,
        default=12,
        help="size of the programs: LLM calls before only leaf statements",
    )
    args = parser.parse_args(argv)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        tally, report, failing = run_campaign(
            args.programs,
            args.seed,
            crash_points=args.crash_points,
            forks=args.forks,
            directory=Path(folder),
            jobs=args.jobs,
            max_llm_calls=args.max_llm_calls,
        )
    print(
        f"{args.programs} programs (seeds {args.seed}..{args.seed + args.programs - 1}, "
        f"max_llm_calls {args.max_llm_calls}), "
        f"{report.crash_points} crash points after a checkpoint, {report.stream_crashes} "
        f"crashes in an LLM stream, {report.double_crashes} crashes during a resume, "
        f"{report.forks} forks: {failing} failing, in {time.monotonic() - start:.0f} s"
    )
    print("shapes covered (programs): " + ", ".join(f"{shape} {tally[shape]}" for shape in SHAPES))
    missing = [shape for shape in SHAPES if not tally[shape]]
    if missing:
        print("shapes never generated: " + ", ".join(missing))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
