"""The published tables: known cells, protocol metadata and the decoding consistency checks."""

import shutil

import pandas as pd
import pytest

from fidec_gym.eval.paper.published import PUBLISHED_ROOT, PublishedDataError, load_published, method_name


@pytest.fixture(scope="module")
def paper():
    return load_published("fidec-paper")


def test_known_cells(paper):
    cell = paper.task_cell("fidec", "fidec/cube-single-play-singletask-task2-v0")
    assert (cell.mean, cell.std, cell.std_kind) == (96, 1, "seeds")
    assert str(cell) == "96 ± 1"
    scene = paper.category_cell("DeFlow", "scene")
    assert (scene.mean, scene.std) == (51, 40)
    assert scene.std_kind == "tasks"  # DeFlow's category ± is the spread across tasks, not seeds
    assert paper.category_cell("FiDec", "scene").std_kind == "seeds"


def test_missing_entries_and_quoted_values(paper):
    # No BC on visual tasks, nothing for toys; D4RL BC is a single quoted number.
    assert paper.task_cell("bc", "visual-cube-single-play-singletask-task1-v0") is None
    assert paper.task_cell("fidec", "fidec/toy-bimodal-v0") is None
    quoted = paper.task_cell("BC", "antmaze-umaze-v2")
    assert quoted.std is None and quoted.quoted and quoted.protocol["seeds"] is None
    assert not paper.task_cell("fql", "antmaze-umaze-v2").quoted


def test_protocol_metadata(paper):
    state = paper.protocol_for("fql", "ogbench")
    assert state["averaged_steps"] == [800_000, 900_000, 1_000_000]
    assert state["offline_steps"] == 1_000_000 and state["eval_episodes"] == 50
    assert state["success_timing"] == "post" and state["seeds"] == 8
    visual = paper.protocol_for("FQL", "visual")
    assert visual["averaged_steps"] == [300_000, 400_000, 500_000] and visual["seeds"] == 4
    assert paper.protocol_for("fql", "d4rl")["averaged_steps"] == [500_000]
    fidec = paper.protocol_for("fidec", "ogbench")
    assert fidec["seeds"] is None and fidec["success_timing"] is None


def test_consistency_checks_pass_with_the_known_rounding_leftovers(paper):
    report = paper.check()
    assert report.ok, report.problems
    # The README lists exactly 12 category cells whose mean differs from the per-task average by > 0.5.
    assert len(report.notes) == 12
    assert any(note.startswith("FiDec antmaze-large") for note in report.notes)


def test_category_means_match_per_task_means(paper):
    per_task = paper.per_task
    cube = per_task[(per_task["method"] == "FiDec") & (per_task["category"] == "cube-single")]
    assert list(cube["mean"]) == [96, 96, 98, 89, 90]
    assert cube["mean"].mean() == pytest.approx(93.8)
    assert paper.category_cell("FiDec", "cube-single").mean == 94


def _copy(tmp_path):
    target = tmp_path / "published"
    shutil.copytree(PUBLISHED_ROOT, target)
    return target


def test_a_corrupted_copy_is_refused(tmp_path):
    target = _copy(tmp_path)
    frame = pd.read_csv(target / "table2_per_category.csv")
    frame.loc[(frame["method"] == "FiDec") & (frame["category"] == "scene"), "mean"] = 70
    frame.to_csv(target / "table2_per_category.csv", index=False)
    with pytest.raises(PublishedDataError, match="FiDec scene: printed mean 70"):
        load_published("edited", directory=target)
    # Loading without validation still works, for inspection.
    assert load_published("edited", directory=target, validate=False).category_cell("fidec", "scene").mean == 70


def test_missing_and_malformed_files(tmp_path):
    target = _copy(tmp_path)
    (target / "table2_per_task.csv").unlink()
    with pytest.raises(PublishedDataError, match="missing published table"):
        load_published("broken", directory=target)
    target = _copy(tmp_path / "second")
    text = (target / "table5_timing.csv").read_text().replace("2.13", "fast")
    (target / "table5_timing.csv").write_text(text)
    with pytest.raises(PublishedDataError, match="non-numeric ms_per_step_mean"):
        load_published("broken2", directory=target)


def test_unknown_names():
    with pytest.raises(KeyError, match="did you mean 'fidec-paper'"):
        load_published("fidec-papr")
    with pytest.raises(KeyError, match="unknown method"):
        method_name("sac")
    assert method_name("rebrac") == "ReBRAC" and method_name("FAWAC") == "FAWAC"
