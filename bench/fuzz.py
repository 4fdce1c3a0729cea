"""The mail fuzzer (tests/fuzzer.py) for as long as you like, with figures.

The CI test (tests/gateway/test_fuzz.py) runs a few thousand mutants; this runs as many
as asked, on SQLite and PostgreSQL side by side, and prints mutants/s, the outcome counts
per backend and every failure class with its first mutant. With --save it shrinks the
first mutant of each class to a minimal input that still fails alone and writes it to
tests/data/fuzz/ (or the folder given), ready to become a regression test.

    .venv/bin/python bench/fuzz.py [--mutants 20000] [--seed 1] [--backends sqlite,postgresql]
                                   [--batch 50] [--save [DIR]] [--budget 300]

Exits 1 when a failure class was found.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import fuzzer  # noqa: E402


async def run(args: argparse.Namespace, folder: Path) -> int:
    backends = args.backends.split(",")
    report = await fuzzer.fuzz(backends, folder, fuzzer.mutants(args.seed, args.mutants),
                               args.batch)
    print(report.summary())
    if args.save is not None and report.failures:
        await save_reproducers(report, backends, folder, Path(args.save), args.budget)
    return 1 if report.failures else 0


async def save_reproducers(report: fuzzer.Report, backends: list[str], folder: Path,
                           target: Path, budget: int) -> None:
    for key, failures in sorted(report.classes().items()):
        first = next((f for f in failures if f.mutant is not None), None)
        if first is None:
            continue
        where = ["parse"] if first.backend == "parse" else (
            backends if first.backend == "all" else [first.backend])

        async def still_fails(raw: bytes, key=key, where=where) -> bool:
            return await fuzzer.reproduces(raw, key, where, folder)

        if not await still_fails(first.mutant.raw):
            print(f"  {key}: does not fail alone (depends on earlier mutants); not saved")
            continue
        small = await fuzzer.minimize(first.mutant.raw, still_fails, budget)
        path = write(target / f"{slug(key)}.eml", small)
        print(f"  {key}: {len(first.mutant.raw)} -> {len(small)} bytes, {path}")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def slug(key: str) -> str:
    """A file name for a class: readable, and unique even where the start is shared."""
    readable = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")[:60]
    return f"{readable}_{hashlib.sha1(key.encode()).hexdigest()[:6]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--save", nargs="?", const=str(fuzzer.REPRODUCERS), default=None,
                        help="write a minimal reproducer per failure class (default folder: "
                             "tests/data/fuzz)")
    parser.add_argument("--budget", type=int, default=300,
                        help="tries per failure class when shrinking a reproducer")
    args = parser.parse_args()
    # The fuzzer collects helpgate's errors itself; tracebacks on the terminal are noise.
    logging.getLogger("helpgate").propagate = False
    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(run(args, Path(folder)))


if __name__ == "__main__":
    sys.exit(main())
