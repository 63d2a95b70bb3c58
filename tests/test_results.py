"""The committed reference results stay what their stores say: `fidec leaderboard report` on each committed export
rebuilds its committed report page (text and tables), and the README links the results page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fidec_gym.cli import main
from fidec_gym.eval.store import ResultsStore, is_snapshot

ROOT = Path(__file__).resolve().parent.parent
# Each export holds one update budget, so that its report never ranks agents trained for different lengths.
BUDGETS = {"cpu-reference": 50_000, "cpu-reference-100k": 100_000}


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_each_committed_export_is_a_self_contained_snapshot_of_one_budget(name):
    export = ROOT / "leaderboards" / "results" / name
    assert is_snapshot(export / "results.sqlite")
    store = ResultsStore.open_for_reading(export)
    runs = store.runs()
    assert runs and {run["preset"] for run in runs} == {"cpu-reference"}
    done = [run for run in runs if run["status"] == "done"]
    assert done and all(run["config"]["offline_steps"] == BUDGETS[name] for run in done)
    for artefact in store.artefacts():
        assert not Path(artefact["path"]).is_absolute() and (export / artefact["path"]).is_file()


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_each_committed_report_rebuilds_from_its_export(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the page names the results folder as it was given: relative to the checkout
    page = ROOT / "docs" / "results" / name
    export = Path("leaderboards", "results", name)
    assert main(["leaderboard", "report", "--out", str(export), "--report-dir", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").read_text() == (page / "report.md").read_text()
    for table in sorted((page / "tables").iterdir()):
        assert (tmp_path / "report" / "tables" / table.name).read_text() == table.read_text(), table.name
    assert sorted(p.name for p in (tmp_path / "report" / "figures").iterdir()) == sorted(
        p.name for p in (page / "figures").iterdir()
    )


def test_the_readme_links_the_results_page_and_the_page_its_report():
    assert "(docs/results.md)" in (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "results.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", page):
        if not link.startswith("http"):
            assert (ROOT / "docs" / link).resolve().exists(), link
