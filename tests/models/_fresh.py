"""Check that a saved bundle predicts exactly the same in a fresh Python process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medweave.cohort import Cohort


def assert_reloads_in_fresh_process(est: Any, cohort: Cohort, tmp_path: Path) -> None:
    """Save ``est`` and ``cohort``; a new interpreter loads both with the estimator's own
    class and must reproduce ``est.predict_output(cohort)`` bit for bit."""
    est.save(tmp_path / "bundle")
    cohort.save(tmp_path / "cohort")
    expected = est.predict_output(cohort)
    np.savez(tmp_path / "expected.npz", **expected)
    code = (
        "import numpy as np, sys\n"
        "from medweave.cohort import Cohort\n"
        f"from {type(est).__module__} import {type(est).__name__} as Estimator\n"
        f"est = Estimator.load({str(tmp_path / 'bundle')!r})\n"
        f"got = est.predict_output(Cohort.load({str(tmp_path / 'cohort')!r}))\n"
        f"exp = np.load({str(tmp_path / 'expected.npz')!r})\n"
        "same = set(got) == set(exp.files) and all(np.array_equal(got[k], exp[k]) for k in got)\n"
        "sys.exit(0 if same else 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
