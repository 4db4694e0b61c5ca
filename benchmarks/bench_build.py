"""Time of `medweave build` on the demo's cohort, per source: what reading with the value
checks costs (every DICOM series decoded, every expression sample and exposure row checked).

Run with `.venv/bin/python benchmarks/bench_build.py [--patients N] [--repeats R]`. Each
source is built alone (with the index) R times in this process; the best time is kept.
A source's time is its build minus the index's. Point PYTHONPATH at another checkout's
src/ to time that version on the same cohort.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

import medweave
from medweave.cohort import build
from medweave.synth import synthesize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medweave-bench-"))
    try:
        synthesize(tmp / "cohort", n_patients=args.patients, seed=args.seed, missing=0.3)
        config = yaml.safe_load((tmp / "cohort" / "cohort.yaml").read_text())
        print(
            f"medweave build, {args.patients} patients (seed {args.seed}), {os.cpu_count()} cores"
        )
        print(f"  medweave at {Path(medweave.__file__).parent}")
        path = tmp / "cohort" / "one.yaml"

        def best(sources: list[dict[str, object]]) -> float:
            path.write_text(yaml.safe_dump({**config, "sources": sources}, sort_keys=False))
            return min(_timed(path) for _ in range(args.repeats))

        index = best([])
        print(f"  {'index and outcomes':20s} {index:6.2f} s")
        total = index
        for source in config["sources"]:
            seconds = best([source]) - index
            total += seconds
            print(f"  {source['name']:20s} {seconds:6.2f} s")
        print(f"  {'whole cohort':20s} {total:6.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _timed(path: Path) -> float:
    start = time.perf_counter()
    build(path)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
