"""The report page: self-contained, in the clinician's order, escaped, written atomically."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from medweave import __version__
from medweave.errors import InputError
from medweave.report import _plots, render

SECTIONS = [
    "finding",
    "cohort",
    "missingness",
    "models",
    "curves",
    "comparisons",
    "stratification",
    "subgroups",
    "timing",
]


class _Outline(HTMLParser):
    """Section ids, headings, table rows by table id, and every tag name seen."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.h2: list[str] = []
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str | None]] = []
        self.rows: dict[str, int] = {}
        self._table: str | None = None
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += attrs
        found = dict(attrs)
        if tag == "section":
            self.sections.append(found.get("id") or "")
        elif tag == "h2":
            self._in_h2 = True
            self.h2.append("")
        elif tag == "table":
            self._table = found.get("id")
        elif tag == "tr" and self._table:
            self.rows[self._table] = self.rows.get(self._table, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2[-1] += data


def _outline(html: str) -> _Outline:
    parser = _Outline()
    parser.feed(html)
    return parser


def _page(results: dict[str, Any], tmp_path: Path) -> str:
    path = render(results, tmp_path)
    assert path == tmp_path / "report.html"
    return path.read_text("utf-8")


@pytest.fixture(scope="module")
def pages(report_paths: dict[str, Path]) -> dict[str, str]:
    """Both fixtures' pages, rendered once per session."""
    return {task: path.read_text("utf-8") for task, path in report_paths.items()}


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip matplotlib for tests about the tables and text (it is most of the render time)."""
    for name in ("roc_svg", "pr_svg", "calibration_svg", "td_auc_svg", "km_svg"):
        monkeypatch.setattr(_plots, name, lambda *a, **k: "<svg></svg>")


@pytest.mark.parametrize("task", ["binary", "survival"])
def test_page_is_self_contained_and_small(pages: dict[str, str], task: str) -> None:
    html = pages[task]
    outline = _outline(html)
    assert len(html.encode()) < 3_000_000
    assert not re.search(r"https?:|//[a-z]", html, re.IGNORECASE)  # no URL of any kind
    assert not {"script", "link", "img", "iframe", "object", "embed"} & outline.tags
    assert not [a for a, v in outline.attrs if a in {"src", "srcset"} or a.startswith("on")]
    assert all(v.startswith("#") for a, v in outline.attrs if a == "href" and v)
    assert "@import" not in html and "url(" not in html.replace("url(#", "")
    assert "Content-Security-Policy" in html


@pytest.mark.parametrize("task", ["binary", "survival"])
def test_sections_in_order(pages: dict[str, str], task: str) -> None:
    outline = _outline(pages[task])
    assert outline.sections == SECTIONS
    assert outline.h2[0] == "Key finding"
    assert outline.h2[3] == "Model comparison"


def test_header_and_footer(pages: dict[str, str]) -> None:
    html = pages["binary"]
    assert "<h1>Synthetic demo — binary outcome</h1>" in html
    assert "14 Jul 2025, 09:31 UTC" in html
    assert "5-fold cross-validation (seed 0); 1,000 bootstrap resamples" in html
    assert "<dd>257 (32.1%)</dd>" in html
    assert f"page rendered by medweave {__version__}; results schema 1.0" in html


def test_key_finding_names_best_model_and_paired_difference(pages: dict[str, str]) -> None:
    found = re.search(r'<p class="finding">(.*?)</p>', pages["binary"])
    assert found is not None
    assert found.group(1) == (
        "The best model, fusion:attention (all 4 modalities, attention fusion), reached AUROC "
        "0.884 (CI 0.863–0.905); compared with the best single modality, single:ehr (AUROC "
        "0.747), the paired difference was +0.137 (CI 0.119 to 0.155; p &lt; 0.001)."
    )
    survival = pages["survival"]
    assert "reached Harrell&#39;s C 0.727 (CI 0.709–0.745)" in survival
    assert "the paired difference was +0.054 (CI 0.036 to 0.072; p &lt; 0.001)" in survival


@pytest.mark.usefixtures("no_plots")
def test_key_finding_without_a_comparison_or_single_model(
    binary_results: dict[str, Any], tmp_path: Path
) -> None:
    binary_results["comparisons"] = []
    assert "no paired comparison of the two is in the results" in _page(binary_results, tmp_path)
    binary_results["best_single"] = None
    assert "no single-modality model was evaluated" in _page(binary_results, tmp_path)


def test_model_table_sorted_with_best_and_ceiling(
    pages: dict[str, str], results_by_task: dict[str, dict[str, Any]]
) -> None:
    html = pages["binary"]
    start = html.index('id="model-table"')
    table = html[start : html.index("</table>", start)]
    names = re.findall(r'<td class="name">(.*?)</td>', table)
    aurocs = {
        m["name"]: m["metrics"]["auroc"]["estimate"] for m in results_by_task["binary"]["models"]
    }
    assert names == sorted(aurocs, key=lambda n: -aurocs[n])
    assert len(names) == 10
    first = table[table.index('<td class="name">') :].split("</tr>")[0]
    assert first.count('class="num best"') == 5  # the attention model is best everywhere
    assert '0.884 <span class="ci">(0.863–0.905)</span>' in first
    assert "Ceiling (observed data)" in table and "Ceiling (oracle)" in table
    assert ">0.893<" in table


@pytest.mark.usefixtures("no_plots")
def test_best_value_direction_and_no_ceiling(
    binary_results: dict[str, Any], tmp_path: Path
) -> None:
    """Lowest Brier is best; calibration slope closest to 1, intercept closest to 0."""
    models = binary_results["models"]
    models[7]["metrics"]["brier"]["estimate"] = 0.05
    models[7]["metrics"]["calibration_slope"]["estimate"] = 1.001
    models[7]["metrics"]["calibration_intercept"]["estimate"] = 0.0
    binary_results["ceiling"] = None
    html = _page(binary_results, tmp_path)
    row = html[html.index('<td class="name">single:omics</td>') :].split("</tr>")[0]
    assert re.findall(r'class="num( best)?">([^ <]+)', row) == [
        ("", "0.700"),
        ("", "0.542"),
        (" best", "0.050"),
        (" best", "1.001"),
        (" best", "0.000"),
    ]
    assert "Ceiling (" not in html


def test_binary_and_survival_plots(pages: dict[str, str]) -> None:
    binary, survival = pages["binary"], pages["survival"]
    assert re.findall(r'<svg role="img" aria-label="([^"]+)"', binary) == [
        "ROC curves",
        "Precision-recall curves",
        "Calibration curves",
        "Kaplan-Meier curves: clusters",
    ]
    assert re.findall(r'<svg role="img" aria-label="([^"]+)"', survival) == [
        "Time-dependent AUC",
        "Kaplan-Meier curves: clusters",
        "Kaplan-Meier curves: risk groups",
    ]
    assert "Log-rank test: χ² = 84.3, df = 2, p &lt; 0.001" in survival
    for html in (binary, survival):
        ids = re.findall(r'<clipPath id="([^"]+)"', html)
        assert len(ids) == len(set(ids)) > 0  # plots on one page never share an id


def test_top_six_models_are_plotted(pages: dict[str, str]) -> None:
    html = pages["binary"]
    roc = html[html.index('aria-label="ROC curves"') : html.index("</svg>")]
    assert ">fusion:attention<" in roc and ">subset:ehr+omics<" in roc
    assert ">single:ehr<" not in roc  # seventh by AUROC


def test_stratification_tables_and_profiles(pages: dict[str, str]) -> None:
    html = pages["survival"]
    assert "Clusters <small>(kmeans, k = 3)</small>" in html
    assert "Risk groups <small>(risk_quantiles, k = 3)</small>" in html
    assert "k = 3: 0.27" in html
    assert '<td class="up">↑ higher</td>' in html and '<td class="down">↓ lower</td>' in html
    assert "Modality available:" in html and "imaging 83%" in html


def test_subgroups_show_best_and_best_single(pages: dict[str, str]) -> None:
    html = pages["binary"]
    part = html[html.index('<section id="subgroups">') : html.index('<section id="timing">')]
    assert '<th class="num">fusion:attention</th><th class="num">single:ehr</th>' in part
    assert '<td>site</td><td>C</td><td class="num">12</td>' in part
    assert part.count("<tr>") == 8  # header and seven levels


@pytest.mark.usefixtures("no_plots")
def test_missing_pieces_render(binary_results: dict[str, Any], tmp_path: Path) -> None:
    r = binary_results
    r.update(ceiling=None, best_single=None, comparisons=[])
    r["stratification"].update(clusters=None, risk_groups=None)
    for model in r["models"]:
        model.update(subgroups=[], folds=[])
    r["models"][0]["metrics"]["auprc"] = {"estimate": None, "ci_low": None, "ci_high": None}
    r["models"][0]["metrics"]["brier"]["ci_low"] = None
    html = _page(r, tmp_path)
    assert "No paired comparisons are in the results." in html
    assert "No stratification is in the results." in html
    assert "No subgroup results are in the results." in html
    first = html[html.index('<td class="name">fusion:attention</td>') :].split("</tr>")[0]
    assert '<td class="num">—</td>' in first
    assert '<td class="num best">0.123</td>' in first  # estimate alone without its interval


@pytest.mark.usefixtures("no_plots")
def test_how_the_neural_models_were_built(binary_results: dict[str, Any], tmp_path: Path) -> None:
    html = _page(binary_results, tmp_path)  # results without settings: no sentence
    assert "How the models were built" not in html
    binary_results["study"]["estimator"] = {"ensemble": 3, "interactions": 1, "lr": 5e-4}
    html = _page(binary_results, tmp_path)
    assert (
        "How the models were built: each neural model averages 3 networks; their output is "
        "averaged 1:1 with that of a penalised regression on the same inputs with rank-1 "
        "pairwise interactions between modalities; a model of images alone is a single "
        "network."
    ) in html
    binary_results["study"]["estimator"] = {"encoder_params": {"imaging": {"augment": True}}}
    html = _page(binary_results, tmp_path)
    assert (
        "How the models were built: the imaging encoder trains on randomly flipped images; "
        "a model of images alone is a single network."
    ) in html
    binary_results["study"]["estimator"] = {
        "encoder_params": {"imaging": {"augment": "dihedral", "tta": True}}
    }
    html = _page(binary_results, tmp_path)
    assert (
        "the imaging encoder trains on images randomly flipped and rotated by multiples of "
        "90°, and embeds each image as the mean over those transforms;"
    ) in html


def test_subgroup_variables_the_cohort_lacks_are_said(
    binary_results: dict[str, Any], tmp_path: Path
) -> None:
    binary_results["subgroups_unavailable"] = [
        {"variable": "site", "reason": "not a column of the cohort's patient table"}
    ]
    html = _page(binary_results, tmp_path)
    assert "Not evaluated: site (not a column of the cohort&#39;s patient table)." in html


def test_few_data_are_said(binary_results: dict[str, Any], tmp_path: Path) -> None:
    assert 'id="few-data"' not in _page(binary_results, tmp_path)
    binary_results["cohort"]["n_events"] = 41
    binary_results["cohort"]["features"] = {"ehr": 20, "omics": 12_000}
    html = _page(binary_results, tmp_path)
    assert "Few data for what is estimated: 41 patients with the outcome;" in html
    assert "0.0034 patients with the outcome per candidate feature (12,020)." in html


def test_settings_the_estimator_chose_are_listed_with_reasons(
    binary_results: dict[str, Any], tmp_path: Path
) -> None:
    assert 'id="chosen-settings"' not in _page(binary_results, tmp_path)
    best = max(binary_results["models"], key=lambda m: m["metrics"]["auroc"]["estimate"])
    best["settings"] = {
        "ensemble": {"value": 3, "reason": "three networks averaged"},
        "pca": {"value": {"omics": 16}, "reason": "about 22 events per component"},
    }
    best["warnings"] = ["fold 0: 40 events per 1,000 parameters"]
    html = _page(binary_results, tmp_path)
    assert "<td>pca</td><td>omics 16</td><td>about 22 events per component</td>" in html
    assert "<li>fold 0: 40 events per 1,000 parameters</li>" in html
    # the sentence on how the models were built reads the chosen settings too
    assert "each neural model averages 3 networks" in html


def test_the_stack_s_vote_in_words(binary_results: dict[str, Any], tmp_path: Path) -> None:
    assert 'id="stack-weights"' not in _page(binary_results, tmp_path)
    stack = {**binary_results["models"][0], "name": "stack", "kind": "stack", "fusion": None}
    members = [m["name"] for m in binary_results["models"]]
    weights = dict.fromkeys(members, 0.0) | {members[0]: 0.9, members[1]: 0.3}
    stack["stack"] = {
        "members": members,
        "weights": weights,
        "intercept": 0.1,
        "penalty": 0.01,
        "folds": [{"fold": 0, "penalty": 0.01, "weights": weights}],
        "bundle": True,
    }
    binary_results["models"].append(stack)
    html = _page(binary_results, tmp_path)
    assert (
        f"Share of the final vote: {members[0]} 0.75, {members[1]} 0.25; weight zero: "
        f"{', '.join(members[2:])}."
    ) in html


@pytest.mark.usefixtures("no_plots")
def test_timing_lists_wall_clock_steps_then_each_model_s_fits(
    binary_results: dict[str, Any], tmp_path: Path
) -> None:
    binary_results["timing"]["steps"]["fit fusion:late"] = 700.0  # a run's per-model sums
    html = _page(binary_results, tmp_path)
    part = html[html.index('<section id="timing">') :]
    steps = part[: part.index('<table class="fits">')]
    assert "<td>train</td>" in steps and "fit fusion:late" not in steps
    fits = part[part.index('<table class="fits">') :]
    assert "<td>fusion:late</td>" in fits


EVIL = '<script>alert("x")</script>$\\alpha$'
EVIL_ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;$\\alpha$"


@pytest.mark.usefixtures("no_plots")
def test_cohort_flow_lists_each_source_s_exclusions(pages: dict[str, str]) -> None:
    html = pages["binary"]
    table = html[html.index("Rows and patients per source") : html.index('id="missingness"')]
    assert "value:not_a_number: 1,023" in table  # a value check's exclusions, by reason
    assert "no_home_location: 28" in table  # patients without a source's data, by reason
    assert "<td>index</td>" in table and table.count("<tr>") == 6


def test_survival_page_states_the_truncation_time(pages: dict[str, str]) -> None:
    assert "count events up to day 1461 (the 80th percentile of follow-up" in pages["survival"]
    assert "count events up to day" not in pages["binary"]


def test_results_without_source_audits_render(
    binary_results: dict[str, Any], tmp_path: Path, no_plots: None
) -> None:
    del binary_results["cohort"]["sources"]  # results.json of an earlier version
    assert "Rows and patients per source" not in _page(binary_results, tmp_path)


def test_all_text_is_escaped(binary_results: dict[str, Any], tmp_path: Path) -> None:
    r = binary_results
    r["study"]["name"] = EVIL
    r["cohort"]["flow"]["excluded"][EVIL] = 1
    r["models"][0]["subgroups"][0]["level"] = EVIL
    r["stratification"]["clusters"]["profiles"][0]["top_features"][0]["feature"] = EVIL
    old = r["models"][0]["name"]
    r["models"][0]["name"] = EVIL
    r["stratification"]["model"] = EVIL
    for comp in r["comparisons"]:
        comp["model"] = EVIL if comp["model"] == old else comp["model"]
    html = _page(r, tmp_path)
    assert "<script" not in html
    assert html.count(EVIL_ESCAPED) >= 7


def test_plot_labels_are_escaped_and_literal() -> None:
    svg = _plots.roc_svg([_plots.Series(EVIL, [0, 0.5, 1], [0, 0.8, 1])])
    assert "<script" not in svg
    assert EVIL_ESCAPED.replace("&#34;", '"') + "</text>" in svg  # no mathtext, no tag


@pytest.mark.usefixtures("no_plots")
def test_render_validates_first_and_keeps_the_old_page(
    binary_results: dict[str, Any], tmp_path: Path
) -> None:
    old = render(binary_results, tmp_path).read_text("utf-8")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "report.html"]  # no temporary left
    binary_results["cohort"]["n_events"] = float("nan")
    with pytest.raises(InputError, match=r"\$\.cohort\.n_events is nan"):
        render(binary_results, tmp_path)
    assert (tmp_path / "report.html").read_text("utf-8") == old
    assert sorted(tmp_path.iterdir()) == [tmp_path / "report.html"]


@pytest.mark.usefixtures("no_plots")
def test_out_must_be_a_folder(binary_results: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="looks like a file; pass the folder"):
        render(binary_results, tmp_path / "report.html")
    (tmp_path / "taken").write_text("x")
    with pytest.raises(InputError, match="is a file, expected a folder"):
        render(binary_results, tmp_path / "taken")
    path = render(binary_results, tmp_path / "new" / "folder")
    assert path.is_file()
