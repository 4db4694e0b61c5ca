"""The report in a real browser: headless Chromium from Debian's ``chromium`` package.

Playwright drives the system binary (``executable_path``); it never downloads a browser.
Without chromium (or Playwright) these tests skip, or fail when
``MEDWEAVE_TEST_BROWSER_REQUIRED=1`` (as in ``.ci/run``). ``make test`` installs chromium.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REQUIRED = os.environ.get("MEDWEAVE_TEST_BROWSER_REQUIRED") == "1"
WIDTH = 1280
HEADINGS = {
    "binary": "Discrimination and calibration",
    "survival": "Discrimination over time",
}
N_PLOTS = {"binary": 4, "survival": 3}  # curves, then one Kaplan-Meier plot per grouping


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(
            f"{reason}; MEDWEAVE_TEST_BROWSER_REQUIRED=1, so this fails instead of skipping "
            "(`apt-get install -y --no-install-recommends chromium`, as `make test` does)"
        )
    pytest.skip(f"browser test skipped: {reason} (`make test` installs Debian's chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module, from the ``chromium`` on PATH."""
    executable = shutil.which("chromium")
    if executable is None:
        _unavailable("no `chromium` on PATH")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=executable)
    except Error as exc:
        playwright.stop()
        _unavailable(f"{executable} did not start: {str(exc).splitlines()[0]}")
    yield chromium
    chromium.close()
    playwright.stop()


def _open(browser: Browser, path: Path) -> tuple[Page, list[str]]:
    """Load a file offline; the list collects console errors, page errors and any request."""
    context = browser.new_context(offline=True, viewport={"width": WIDTH, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"console.{m.type}: {m.text}")
            if m.type in {"error", "assert"}
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "request",
        lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(r.url),
    )
    page.goto(path.as_uri(), wait_until="load")
    return page, problems


@pytest.mark.parametrize("task", ["binary", "survival"])
def test_report_renders_in_chromium(
    browser: Browser,
    report_paths: dict[str, Path],
    results_by_task: dict[str, dict[str, Any]],
    task: str,
    tmp_path: Path,
) -> None:
    results = results_by_task[task]
    page, problems = _open(browser, report_paths[task])
    try:
        assert page.title() == f"{results['study']['name']} — medweave report"
        assert page.locator("h1").inner_text() == results["study"]["name"]
        assert page.locator("h2").all_inner_texts() == [
            "Key finding",
            "Cohort flow",
            "Missing data patterns",
            "Model comparison",
            HEADINGS[task],
            "Paired comparisons",
            "Patient stratification",
            "Subgroups",
            "Timing",
        ]
        n_ceilings = 0 if results["ceiling"] is None else 2
        rows = page.locator("#model-table tbody tr")
        assert rows.count() == len(results["models"]) + n_ceilings
        assert rows.first.locator("td.best").count() > 0
        comparisons = page.locator("#comparisons-table tbody tr")
        assert comparisons.count() == len(results["comparisons"])
        assert page.locator(".finding").inner_text().startswith("The best model, ")

        plots = page.locator("figure.plot svg")
        assert plots.count() == N_PLOTS[task]
        for i in range(plots.count()):
            box = plots.nth(i).bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 150
            assert plots.nth(i).locator("text").count() > 10  # ticks, labels, legend
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= WIDTH  # wide tables scroll inside their box, not the page

        shot = tmp_path / f"report-{task}.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.context.close()
    assert problems == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as image:
        assert image.width == WIDTH and image.height > 3000
        colours = image.convert("RGB").resize((160, 400)).getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 200  # text, tables and plots, not blank


def test_console_check_catches_errors(browser: Browser, tmp_path: Path) -> None:
    """The checks above would see a script error, a console error and a network request."""
    path = tmp_path / "broken.html"
    path.write_text(
        "<!DOCTYPE html><title>broken</title><h1>x</h1>"
        "<script>console.error('boom'); undefinedFunction();</script>"
        '<img src="https://example.invalid/x.png">',
        encoding="utf-8",
    )
    page, problems = _open(browser, path)
    page.wait_for_timeout(200)
    page.context.close()
    assert "console.error: boom" in problems
    assert any(p.startswith("page error:") and "undefinedFunction" in p for p in problems)
    assert "https://example.invalid/x.png" in problems
