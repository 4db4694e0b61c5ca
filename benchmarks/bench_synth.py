"""Speed and memory of `medweave synth`: 10,000 patients, target < 60 s and < 2 GB.

Run with `make bench` (or `.venv/bin/python benchmarks/bench_synth.py [--patients N]`).
Peak memory is the summed resident memory of the generator and its worker processes,
sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _measure import measure
from medweave.synth import synthesize

TARGET_SECONDS = 60.0
TARGET_BYTES = 2 * 1024**3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medweave-bench-"))
    try:
        summary, seconds, peak = measure(
            lambda: synthesize(tmp / "cohort", n_patients=args.patients, seed=args.seed)
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"medweave synth --patients {args.patients} on {os.cpu_count()} cores")
    print(f"  wall time   {seconds:7.1f} s   (target < {TARGET_SECONDS:.0f} s)")
    print(f"  peak memory {peak / 1024**2:7.0f} MiB (target < {TARGET_BYTES / 1024**2:.0f} MiB)")
    print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary.seconds.items()))
    print(
        f"  DICOM files {summary.rows['dicom_files']}, measurements {summary.rows['measurement']}"
    )
    ok = seconds < TARGET_SECONDS and peak < TARGET_BYTES
    print("  result: " + ("within target" if ok else "OVER TARGET"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
