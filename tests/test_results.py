"""The committed reference results stay what their store says: `fidec leaderboard report` on the committed export
rebuilds the committed report page (text and tables), and the README links the results page."""

from __future__ import annotations

import re
from pathlib import Path

from fidec_gym.cli import main
from fidec_gym.eval.store import ResultsStore, is_snapshot

ROOT = Path(__file__).resolve().parent.parent
EXPORT = Path("leaderboards", "results", "cpu-reference")
PAGE = ROOT / "docs" / "results" / "cpu-reference"


def test_the_committed_export_is_a_self_contained_snapshot():
    assert is_snapshot(ROOT / EXPORT / "results.sqlite")
    store = ResultsStore.open_for_reading(ROOT / EXPORT)
    runs = store.runs()
    assert runs and {run["preset"] for run in runs} == {"cpu-reference"}
    done = [run for run in runs if run["status"] == "done"]
    assert done and all(run["config"]["offline_steps"] == 50_000 for run in done)
    for artefact in store.artefacts():
        assert not Path(artefact["path"]).is_absolute() and (ROOT / EXPORT / artefact["path"]).is_file()


def test_the_committed_report_rebuilds_from_the_committed_export(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the page names the results folder as it was given: relative to the checkout
    assert main(["leaderboard", "report", "--out", str(EXPORT), "--report-dir", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").read_text() == (PAGE / "report.md").read_text()
    for table in sorted((PAGE / "tables").iterdir()):
        assert (tmp_path / "report" / "tables" / table.name).read_text() == table.read_text(), table.name
    assert sorted(p.name for p in (tmp_path / "report" / "figures").iterdir()) == sorted(
        p.name for p in (PAGE / "figures").iterdir()
    )


def test_the_readme_links_the_results_page_and_the_page_its_report():
    assert "(docs/results.md)" in (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "results.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", page):
        if not link.startswith("http"):
            assert (ROOT / "docs" / link).resolve().exists(), link
