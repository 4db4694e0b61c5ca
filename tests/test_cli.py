"""The command line: exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medweave import __version__
from medweave.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"medweave {__version__}"


def test_help_lists_synth(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert "synth" in out


def test_installed_entry_point() -> None:
    exe = Path(sys.executable).parent / "medweave"
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert __version__ in done.stdout


def test_synth_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["synth", "--out", str(tmp_path / "c"), "--patients", "40", "--seed", "2"], capsys
    )
    assert code == 0
    assert "40 patients" in out
    assert "observed" in out
    assert "imaging" in out


def test_a_bad_scenario_knob_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["synth", "--out", str(tmp_path / "c"), "--scenario", '{"shapes": {"ehr": "steep"}}']
    code, _, err = run(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "shapes['ehr'] = 'steep': expected one of linear, threshold, u" in err


def test_synth_with_a_scenario_and_volumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c"
    code, printed, _ = run(
        ["synth", "--out", str(out), "--patients", "40", "--seed", "2", "--volumes",
         "--scenario", '{"interaction": false, "n_genes": 60}'],
        capsys,
    )  # fmt: skip
    assert code == 0 and "3-D volumes" in printed
    signal = json.loads((out / "truth" / "signal.json").read_text())
    assert "interaction" in json.dumps(signal.get("scenario", signal))
    assert list((out / "volumes").glob("*.nii")) and "volumes" in (out / "cohort.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--patients", "-3"], "--patients"),
        (["--missing", "1.5"], "--missing"),
        (["--mechanism", "sometimes"], "--mechanism"),
        (["--scenario", "{shapes"], "--scenario"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, _, err = run(["synth", "--out", str(tmp_path / "c"), *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert needle in lines[0]
    assert "e.g." in lines[0]
    assert not (tmp_path / "c").exists()


def test_non_empty_out_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _, err = run(["synth", "--out", str(out), "--patients", "30"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--overwrite" in err
    assert (out / "mine.txt").read_text() == "keep me"


def test_unexpected_failure_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import medweave.cli as cli

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated")

    monkeypatch.setattr(cli, "synthesize", boom)
    code, _, err = run(["synth", "--out", str(tmp_path / "c")], capsys)
    assert code == 1
    assert "unexpected error" in err
    assert "simulated" in err
