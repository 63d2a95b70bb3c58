"""The report: Markdown + static HTML with tables, figures and videos, checked in headless Chromium."""

import os
import shutil
from pathlib import Path

import imageio.v2 as imageio
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fidec_gym.cli import main  # noqa: E402
from fidec_gym.eval.paper.compare import compare  # noqa: E402
from fidec_gym.eval.paper.published import load_published  # noqa: E402
from fidec_gym.eval.paper.report import build_report  # noqa: E402
from fidec_gym.eval.store import ResultsStore  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TASKS = ("fidec/cube-single-play-singletask-task2-v0", "fidec/toy-bimodal-v0")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    store = ResultsStore(root)
    rng = np.random.default_rng(0)
    for agent, level in (("fidec", 90.0), ("fql", 70.0)):
        for env_id in TASKS:
            for seed in range(2):
                run_id = store.create_run(
                    agent=agent,
                    env_id=env_id,
                    seed=seed,
                    config={"offline_steps": 2000},
                    data_provenance={"provenance": "generated"},
                    code_version="test",
                    cell=f"t:{agent}:{env_id}",
                    preset="t",
                )
                for step in (1, 1000, 2000):
                    store.add_evaluation(run_id, step, {"normalized_score": level * step / 2000 + rng.normal()})
                store.set_summary(run_id, {"score": level + rng.normal(), "offline_steps": 2000, "eval_episodes": 10})
                store.set_status(run_id, "done")
    # A real mp4 (as fidec_gym.eval.run.video writes them) and a figure registered by the toy study.
    frames = np.zeros((6, 64, 64, 3), np.uint8)
    frames[:, 16:48, 16:48, 0] = 255
    video = root / "runs" / "cube_fidec_seed0_step2000_ep0.mp4"
    video.parent.mkdir(parents=True)
    imageio.mimwrite(video, list(frames), fps=10, macro_block_size=1)
    store.add_artefact(1, "video", str(video), step=2000)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(root / "runs" / "toy_samples.png")
    plt.close(fig)
    store.add_artefact(3, "figure", str(root / "runs" / "toy_samples.png"))
    store.add_rows("toy_metrics", [{"agent": "fidec", "landscape": "T1", "SF1": 0.98, "NI": 0.41}])
    store.add_artefact(3, "video", str(root / "runs" / "deleted.mp4"))  # a file that no longer exists
    index = build_report(store, load_published(), reps=100)
    return store, index


def test_report_files_and_content(results):
    store, index = results
    report_dir = index.parent
    assert report_dir == store.root / "report"
    markdown = (report_dir / "report.md").read_text()
    html = index.read_text()
    for text in (
        "Comparison with the paper",
        "Aggregate performance (rliable)",
        "Learning curves",
        "Videos",
        "Toy study",
        "96 ± 1",
        "partial category (1/5 tasks)",
        "toy task: no published entry",
    ):
        assert text in markdown and text.replace("(", "(") in html
    for name in ("categories", "aggregates", "profiles", "learning_curves"):
        assert (report_dir / "figures" / f"{name}.png").stat().st_size > 1000
    assert (report_dir / "videos" / "run1_cube_fidec_seed0_step2000_ep0.mp4").is_file()
    assert (report_dir / "figures" / "registered" / "run3_toy_samples.png").is_file()
    assert "Missing video file" in markdown  # a vanished artefact is reported, not fatal
    assert "| fidec | T1 | 0.98 | 0.41 |" in markdown
    assert (report_dir / "tables" / "tasks.csv").is_file()
    # Nothing left over from the staging folder.
    assert not [p for p in store.root.iterdir() if p.name.startswith(".report")]


def test_index_html_loads_in_chromium(results):
    if not Path(CHROMIUM).exists():
        pytest.fail("headless Chromium is needed for this test: install it with `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    _, index = results
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(index.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
            assert len(images) == 5 and all(width > 0 for _, width in images), images
            page.wait_for_function(
                "Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 1 || v.error)", timeout=15000
            )
            videos = page.eval_on_selector_all(
                "video", "els => els.map(e => [e.getAttribute('src'), e.readyState, e.error && e.error.code])"
            )
            assert len(videos) == 1
            src, ready, _ = videos[0]
            if ready < 1:  # a browser build without the codec: the file must at least be served
                status = page.evaluate("src => fetch(src).then(r => r.status, () => 0)", src)
                assert status in (0, 200) and (index.parent / src).stat().st_size > 0
        finally:
            browser.close()


def test_rebuild_replaces_the_report(results, monkeypatch):
    store, index = results
    (index.parent / "stale.txt").write_text("from an older build")
    again = build_report(store, load_published(), reps=50)
    assert again == index and not (index.parent / "stale.txt").exists()
    # The comparison a caller already holds (the quickstart's) is used as it is: the same report, computed once.
    text = (index.parent / "report.md").read_text()
    given = compare(store, load_published(), reps=50)
    monkeypatch.setattr("fidec_gym.eval.paper.report.compare", lambda *a, **k: pytest.fail("computed again"))
    assert build_report(store, load_published(), reps=50, comparison=given) == index
    assert (index.parent / "report.md").read_text() == text


def test_report_cli_and_bad_input(results, tmp_path, capsys):
    store, _ = results
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy)
    assert main(["leaderboard", "report", "--out", str(copy), "--reps", "50"]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["leaderboard", "report", "--out", str(tmp_path / "missing")]) == 2
    assert "no results in" in capsys.readouterr().err
    assert main(["leaderboard", "report", "--out", str(copy), "--reps", "-1"]) == 2
    assert "--reps must be at least 1, got -1" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")  # a file given as the report folder is refused, never replaced by a folder
    assert main(["leaderboard", "report", "--out", str(copy), "--report-dir", str(blocker)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err and blocker.read_text() == "mine"
    if os.geteuid() != 0:  # root ignores permission bits
        os.chmod(copy, 0o555)
        try:
            assert main(["leaderboard", "report", "--out", str(copy)]) == 2
            assert "not writable" in capsys.readouterr().err
        finally:
            os.chmod(copy, 0o755)


def test_agent_colours_are_distinct_and_the_same_in_every_process():
    """Every agent of a report has its own colour, and a colour does not depend on the process that draws it (an
    agent name outside the known six once got ``hash(name) % 10``, which changes per process and can collide)."""
    import subprocess
    import sys

    from fidec_gym.eval.paper import figures

    agents = ["bc", "iql", "rebrac", "fql", "deflow", "fidec", "fidec-official", "my-agent"]
    colours = {agent: figures._colour(agent) for agent in agents}
    assert len(set(colours.values())) == len(agents)
    # the known six keep tab10's colours; a variant is the light shade of its base's hue
    tab10 = matplotlib.colormaps["tab10"]
    assert [colours[a] for a in figures.AGENT_ORDER] == [tab10(i) for i in range(6)]
    assert colours["fidec-official"] == matplotlib.colormaps["tab20"](11)
    assert figures._line_style("fidec-official") == "--" and figures._line_style("fidec") == "-"
    code = "from fidec_gym.eval.paper.figures import _colour; print(_colour('my-agent'), _colour('fidec-official'))"
    printed = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        printed.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout)
    assert printed == {f"{colours['my-agent']} {colours['fidec-official']}\n"}
