"""Figures and the numbers behind them: container alignment (against the generator's injected shifts), cell counts,
session population dF/F; plot functions against baseline images; and every figure of the end-to-end demo run.

Baselines live in tests/baseline/. After an intended change to a figure, regenerate them with `make baselines`
(VB2P_UPDATE_BASELINES=1 makes these tests write the new images instead of comparing) and commit them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from matplotlib.testing.compare import compare_images

from vb2p import cell_counts, figures, layout
from vb2p.alignment import align_container, load_view, measure_shift
from vb2p.demo.images import fourier_shift, smooth_noise
from vb2p.extract import extract_experiment
from vb2p.population import session_population
from vb2p.tables import load_tables

BASELINE = REPO / "tests" / "baseline"
TOLERANCE = 1.0  # RMS difference in 0-255 grey levels that compare_images allows; identical stacks give 0
UPDATE = os.environ.get("VB2P_UPDATE_BASELINES") == "1"
PINNED_MATPLOTLIB = "3.11.2"


def assert_matches_baseline(actual: Path, baseline: Path) -> None:
    if UPDATE:
        baseline.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(actual, baseline)
        return
    assert baseline.exists(), f"no baseline {baseline}: run `make baselines` and commit it"
    difference = compare_images(str(baseline), str(actual), tol=TOLERANCE)
    assert difference is None, difference


@pytest.fixture(scope="module")
def stores(tmp_path_factory, demo_root):
    """Every experiment of the small demo release, extracted."""
    out = tmp_path_factory.mktemp("stores")
    for nwb in sorted((demo_root / layout.EXPERIMENT_DIR).glob("*.nwb")):
        experiment_id = int(nwb.stem.rsplit("_", 1)[1])
        extract_experiment(nwb, out / f"{experiment_id}.zarr", experiment_id)
    return out


@pytest.fixture(scope="module")
def tables(demo_root):
    return load_tables({t: demo_root / layout.metadata_key(t) for t in layout.METADATA_TABLES})


def container_views(stores, experiments, container_id):
    rows = experiments[experiments.ophys_container_id == container_id].sort_values("date_of_acquisition")
    return [load_view(stores / f"{experiment_id}.zarr") for experiment_id in rows.index]


def test_measured_shifts_recover_the_injected_shifts(stores, tables, demo_dir):
    experiments = tables["ophys_experiment_table"]
    truth = pd.read_csv(demo_dir / "ground_truth" / "injected_shifts.csv").set_index("ophys_experiment_id")
    rigs = set()
    for container_id in experiments.ophys_container_id.unique():
        views = container_views(stores, experiments, container_id)
        table, _ = align_container(views)
        expected = truth.loc[table.ophys_experiment_id]
        reference = expected.iloc[0]
        error_y = table.shift_y.to_numpy() - (expected.shift_y.to_numpy() - reference.shift_y)
        error_x = table.shift_x.to_numpy() - (expected.shift_x.to_numpy() - reference.shift_x)
        assert np.abs(error_y).max() < 0.25 and np.abs(error_x).max() < 0.25, (container_id, error_y, error_x)
        assert (table.ncc_after[1:] > table.ncc_before[1:]).all() and (table.ncc_after[1:] > 0.8).all()
        assert table.is_reference.tolist() == [True] + [False] * (len(table) - 1)
        rigs.add(views[0].max_projection.shape[0] == views[0].max_projection.shape[1])
    assert rigs == {True, False}  # square Mesoscope planes and non-square Scientifica planes


def test_matched_cell_counts_follow_the_cell_specimen_ids(stores, tables):
    experiments = tables["ophys_experiment_table"]
    cells = tables["ophys_cells_table"]
    container_id = experiments.ophys_container_id.iloc[0]
    views = container_views(stores, experiments, container_id)
    table, _ = align_container(views)
    reference = set(cells[cells.ophys_experiment_id == views[0].ophys_experiment_id].cell_specimen_id.dropna())
    for view, row in zip(views, table.itertuples()):
        mine = set(cells[cells.ophys_experiment_id == view.ophys_experiment_id].cell_specimen_id.dropna())
        assert row.n_matched_to_reference == len(mine & reference)
        assert row.n_cells == (cells.ophys_experiment_id == view.ophys_experiment_id).sum()


def test_shift_measurement_ignores_brightness_and_works_on_non_square_images():
    rng = np.random.default_rng(3)
    reference = 40 + 10 * smooth_noise(rng, (512, 449), 2.0)
    for shift in ((3.37, -2.81), (-0.12, 0.44), (4.9, 4.9)):
        moved = 0.6 * fourier_shift(reference, *shift) + 25 + rng.normal(0, 1.0, reference.shape)
        measured = measure_shift(reference, moved)
        assert abs(measured[0] - shift[0]) < 0.1 and abs(measured[1] - shift[1]) < 0.1, (shift, measured)


# Measured on the real max projection by the hand-written upsampled-DFT registration this project used before
# scikit-image's phase_cross_correlation (commit 71d9a89, upsample 20), for the same shifted and noisy copies.
SHIFTS_BEFORE = {(3.37, -2.81): (3.35, -2.80), (-1.26, 4.4): (-1.25, 4.40), (0.42, 0.17): (0.40, 0.15),
                 (-4.85, -0.63): (-4.85, -0.65)}


def test_shifts_on_a_real_max_projection_before_and_after_scikit_image():
    from PIL import Image

    image = np.asarray(Image.open(REPO / "tests/data/real_images/max_projection.png")).astype(np.float64)
    rng = np.random.default_rng(11)
    print("\ninjected -> before (own DFT) -> after (scikit-image)")
    for injected, before in SHIFTS_BEFORE.items():
        moved = 0.8 * fourier_shift(image, *injected) + 10 + rng.normal(0, 2.0, image.shape)
        after = measure_shift(image, moved, 20)
        print(injected, before, after)
        assert np.abs(np.subtract(after, before)).max() < 0.01, (injected, before, after)
        assert np.abs(np.subtract(after, injected)).max() <= 0.025 + 1e-9  # 1/20 px grid: within half a step


def test_a_single_session_container_gets_a_note_not_a_crash(stores, tables, tmp_path):
    experiments = tables["ophys_experiment_table"]
    views = container_views(stores, experiments, experiments.ophys_container_id.iloc[0])[:1]
    table, registered = align_container(views)
    assert len(table) == 1 and table.shift_y[0] == 0 and table.ncc_after[0] == pytest.approx(1.0)
    figure = figures.plot_container_alignment(1, views, table, registered)
    texts = [t.get_text() for axis in figure.axes for t in axis.texts]
    assert any("single session" in text for text in texts)
    figures.save_png(figure, tmp_path / "single.png")
    assert (tmp_path / "single.png").stat().st_size > 0


def test_cell_count_tables(tables, stores):
    experiments, cells = tables["ophys_experiment_table"], tables["ophys_cells_table"]
    by_experiment = cell_counts.cells_by_experiment(experiments, cells)
    assert len(by_experiment) == len(experiments)
    assert by_experiment.n_cells.sum() == len(cells)
    for row in by_experiment.sample(5, random_state=0).itertuples():
        assert row.n_cells == (cells.ophys_experiment_id == row.ophys_experiment_id).sum()
    by_depth = cell_counts.counts_by_depth(by_experiment, cells, 50)
    assert by_depth.n_rois_summed_over_experiments.sum() == len(cells)
    assert by_depth.n_experiments.sum() == len(experiments)
    assert (by_depth.n_neurons <= by_depth.n_rois_summed_over_experiments).all()
    assert (by_depth.depth_bin_start_um % 50 == 0).all()
    assert set(by_depth.cre_line) == set(experiments.cre_line)
    summary = cell_counts.summary(by_experiment).set_index("group")
    assert summary.loc["all", "count"] == len(experiments)
    assert summary.loc["all", "mean"] == pytest.approx(by_experiment.n_cells.mean())
    from vb2p.index import build_index

    index = build_index(sorted(stores.glob("*.zarr")), stores)
    agreement = cell_counts.selected_agreement(index, by_experiment)
    assert agreement.agree.all() and len(agreement) == len(experiments)


def test_session_population_is_the_mean_of_valid_cells_in_the_window(stores, tables, demo_root):
    experiments = tables["ophys_experiment_table"]
    session_id = experiments[experiments.equipment_name == "MESO.1"].ophys_session_id.iloc[0]
    planes = experiments[experiments.ophys_session_id == session_id].index
    window = (20.0, 45.0)
    traces = session_population([stores / f"{p}.zarr" for p in planes], window)
    assert set(traces.ophys_experiment_id) == set(planes) and len(planes) >= 3
    for experiment_id in planes:
        with h5py.File(demo_root / layout.experiment_key(experiment_id), "r") as f:
            times = f[layout.NWB_TIMESTAMPS][:]
            dff = f[layout.NWB_DFF][:]
            valid = f[layout.NWB_CELL_TABLE]["valid_roi"][:]
        inside = (times >= window[0]) & (times <= window[1])
        expected = dff[inside][:, valid].astype(np.float32).mean(axis=1)
        plane = traces[traces.ophys_experiment_id == experiment_id]
        np.testing.assert_allclose(plane.mean_dff.to_numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(plane.time.to_numpy(), times[inside])


def synthetic_by_experiment() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 60
    return pd.DataFrame(
        {
            "ophys_experiment_id": np.arange(n),
            "cre_line": rng.choice(sorted(figures.CRE_COLOURS), n),
            "targeted_structure": rng.choice(["VISp", "VISl"], n),
            "imaging_depth": rng.choice([75, 150, 175, 225, 275, 300], n),
            "n_cells": rng.integers(5, 250, n),
        }
    )


def synthetic_by_depth() -> pd.DataFrame:
    """Counts per depth bin of a release where each neuron is imaged in about three sessions."""
    rng = np.random.default_rng(8)
    rows = [
        {"cre_line": cre_line, "targeted_structure": structure, "depth_bin_start_um": depth, "bin_width_um": 50,
         "n_experiments": int(n), "n_rois_summed_over_experiments": int(n * 60), "n_neurons": int(n * 20)}
        for cre_line in sorted(figures.CRE_COLOURS)
        for structure in ("VISp", "VISl")
        for depth, n in zip((50, 150, 250), rng.integers(1, 8, 3))
    ]
    return pd.DataFrame(rows)


def synthetic_views():
    rng = np.random.default_rng(6)
    base = 40 + 15 * smooth_noise(rng, (96, 80), 2.0)
    masks = np.zeros((3, 96, 80), dtype=bool)
    for k, (y, x) in enumerate(((20, 20), (50, 40), (70, 60))):
        masks[k, y - 4 : y + 4, x - 4 : x + 4] = True
    from vb2p.alignment import SessionView

    return [
        SessionView(10 + k, f"OPHYS_{k + 1}_images_A", f"2019-03-1{k}",
                    np.clip(fourier_shift(base, k * 1.5, -k), 0, 255).astype(np.uint8), masks,
                    np.array([100, 101, -1 if k else 102]))
        for k in range(3)
    ]


PLOTS = {
    "histogram": lambda: figures.plot_cells_per_experiment_histogram(synthetic_by_experiment()),
    "vs_depth": lambda: figures.plot_cells_vs_depth(synthetic_by_experiment()),
    "by_cre_line": lambda: figures.plot_cells_by_cre_line(synthetic_by_experiment()),
    "by_depth_bin": lambda: figures.plot_counts_by_depth(synthetic_by_depth()),
    "container": lambda: figures.plot_container_alignment(7, synthetic_views(), *align_container(synthetic_views())),
    "session": lambda: figures.plot_session_population(
        9,
        pd.DataFrame(
            {
                "ophys_experiment_id": np.repeat([1, 2], 200),
                "targeted_structure": np.repeat(["VISp", "VISl"], 200),
                "imaging_depth": np.repeat([75, 150], 200),
                "n_cells": np.repeat([20, 30], 200),
                "time": np.tile(np.linspace(300, 600, 200), 2),
                "mean_dff": np.sin(np.linspace(0, 20, 400)) * 0.1,
            }
        ),
        (300, 600),
    ),
}


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_plot_functions_match_their_baselines(name, tmp_path):
    actual = tmp_path / f"{name}.png"
    figures.save_png(PLOTS[name](), actual)
    assert_matches_baseline(actual, BASELINE / "plots" / f"{name}.png")


def test_figures_are_deterministic(tmp_path):
    figures.save_png(PLOTS["container"](), tmp_path / "a.png")
    figures.save_png(PLOTS["container"](), tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert b"Software" not in (tmp_path / "a.png").read_bytes()  # no metadata that changes between runs


def test_rendering_stack_is_the_pinned_one():
    """Baselines are only comparable on the same matplotlib and its bundled FreeType."""
    from matplotlib import ft2font

    assert matplotlib.__version__ == PINNED_MATPLOTLIB
    assert ft2font.__freetype_version__ == "2.14.3"  # bundled in the pinned matplotlib wheel


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The README's main command on the default demo config, and its report: run once for the tests below."""
    workdir = tmp_path_factory.mktemp("demo_run")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(REPO / "config" / "demo.yaml"), "--cores", "2"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = subprocess.run([*command, "--report", str(workdir / "results" / "report.html")], capture_output=True,
                            text=True)
    assert report.returncode == 0, report.stderr[-3000:]
    return workdir


def test_end_to_end_demo_run_figures_match_the_baselines(demo_run):
    """Its numbers against the ground truth, its figures against the committed baselines, and the HTML report."""
    assert (demo_run / "results" / "report.html").stat().st_size > 100_000
    truth = pd.read_csv(demo_run / "resources/demo_release/ground_truth/injected_shifts.csv")
    truth = truth.set_index("ophys_experiment_id")
    alignment = sorted((demo_run / "results/alignment").glob("*.csv"))
    assert len(alignment) == 6
    for path in alignment:
        table = pd.read_csv(path)
        expected = truth.loc[table.ophys_experiment_id]
        reference = expected.iloc[0]
        assert np.abs(table.shift_y - (expected.shift_y.to_numpy() - reference.shift_y)).max() < 0.25
        assert np.abs(table.shift_x - (expected.shift_x.to_numpy() - reference.shift_x)).max() < 0.25
    selected = (demo_run / "results/cell_counts/selected.csv").read_text()
    assert ",False" not in selected
    produced = sorted((demo_run / "results" / "figures").rglob("*.png"))
    sessions = len(list((demo_run / "results/sessions").glob("*.csv")))
    assert len(produced) == 6 + sessions + 4 + sessions + 3  # containers, sessions, cell counts, behavior, platform
    baselines = BASELINE / "demo"
    if not UPDATE:
        expected_names = sorted(p.relative_to(baselines) for p in baselines.rglob("*.png"))
        assert [p.relative_to(demo_run / "results" / "figures") for p in produced] == expected_names
    for path in produced:
        assert_matches_baseline(path, baselines / path.relative_to(demo_run / "results" / "figures"))


def test_the_demo_responses_recover_who_responds_to_what(demo_run):
    """The ground truth of the demo's cells, recovered from the release-wide response table as the platform
    figures count responsive cells."""
    from vb2p.config import load_config
    from vb2p.platform import read_response_table
    from vb2p.responses import preferred_responses

    threshold = load_config(REPO / "config/config.yaml", REPO / "config/demo.yaml")["platform"]["responsive_threshold"]
    table, timestamps = read_response_table(demo_run / "results/responses/cell_responses.parquet")
    assert timestamps[0] == -1.0 and timestamps[-1] == 1.5
    truth = pd.read_csv(demo_run / "resources/demo_release/ground_truth/cell_responses.csv")
    truth = truth[truth.valid_roi].set_index(["ophys_experiment_id", "cell_roi_id"]).response_type
    fractions = {}
    for event_type in ("changes", "omissions"):
        responsive = preferred_responses(table, event_type=event_type, threshold=threshold).set_index(
            ["ophys_experiment_id", "cell_roi_id"]).responsive
        joined = pd.DataFrame({"truth": truth, "responsive": responsive}).dropna()
        assert len(joined) == len(truth)  # every valid ROI of every experiment is in the table
        fractions[event_type] = joined.groupby("truth").responsive.mean()
    print("\nfraction of cells found responsive, by ground-truth response type:\n", pd.DataFrame(fractions))
    assert fractions["changes"]["change"] >= 0.9 and fractions["omissions"]["omission"] >= 0.8
    assert fractions["omissions"]["change"] <= 0.2 and fractions["omissions"]["image"] <= 0.2
    silent = [name for name in fractions["changes"].index if name not in ("change", "omission", "image")]
    assert silent, fractions
    for name in silent:
        assert fractions["changes"][name] <= 0.2 and fractions["omissions"][name] <= 0.2


def test_a_note_figure_holds_its_whole_text():
    """The figure written where there is nothing to draw: every line of its text inside the figure."""
    from vb2p.figures import plot_note

    text = ("No selected experiment is in the platform figures' sessions (config key platform): select whole"
            " containers, or set platform.sessions: all and platform.containers_with_all_experience_levels: false")
    figure = plot_note(text)
    renderer = figure.canvas.get_renderer()
    (shown,) = figure.texts
    assert shown.get_text().split() == text.split()
    assert figure.bbox.contains(*shown.get_window_extent(renderer).min)
    assert figure.bbox.contains(*shown.get_window_extent(renderer).max)


def test_the_platform_figures_count_one_session_per_experience_level_of_each_container(demo_run):
    """config/demo.yaml keeps Allen's sessions (the last active Familiar session, Novel 1, the first active session
    after it) and every container: a panel's planes are the containers that have its session."""
    selection = pd.read_csv(demo_run / "results/selection/experiments.csv")
    population = pd.read_csv(demo_run / "results/platform/population_responses.csv")
    with_novel = selection[selection.experience_level == "Novel 1"].groupby("cre_line").ophys_container_id.nunique()
    familiar = population[population.experience_level == "Familiar"].groupby("cre_line").n_experiments.first()
    pd.testing.assert_series_equal(familiar, with_novel, check_names=False)
    familiar_sessions = selection[selection.experience_level == "Familiar"].groupby("cre_line").size()
    assert (familiar < familiar_sessions[familiar.index]).all()  # not every familiar session: passive ones left out


def test_the_behavior_table_counts_the_ground_truth_trials(demo_run):
    performance = pd.read_csv(demo_run / "results/behavior/performance.csv")
    trials = pd.read_csv(demo_run / "resources/demo_release/ground_truth/trials.csv")
    assert performance.has_task.all() and len(performance) == len(list((demo_run / "results/sessions").glob("*.csv")))
    for row in performance.itertuples():
        mine = trials[trials.behavior_session_id == row.behavior_session_id]
        assert row.trial_count == len(mine)
        assert row.hit_trial_count == mine.hit.sum() and row.false_alarm_trial_count == mine.false_alarm.sum()
    passive = performance.session_type.str.contains("passive")
    assert (performance[passive].earned_reward_count == 0).all() and (performance[~passive].mean_dprime > 0.5).all()


def test_the_readme_python_blocks_run_on_the_demo_results(demo_run, monkeypatch):
    """Every ```python block of the README (using the derived dataset, switching from AllenSDK and bou, the response
    table) runs as written in the directory of a demo run."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(demo_run)
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    assert "sst_novel" in namespace and len(namespace["sst_novel"]) > 0


def test_the_behavior_figures_changes_are_the_performance_tables_counts(demo_run):
    """Each session's changes by outcome, as its behavior figure draws them, against its row of performance.csv."""
    from vb2p.experiment import open_experiment
    from vb2p.performance import change_outcomes

    performance = pd.read_csv(demo_run / "results/behavior/performance.csv")
    assert performance.auto_reward_count.sum() > 0
    for row in performance.itertuples():
        experiment = open_experiment(demo_run / "results/zarr" / f"{row.ophys_experiment_id}.zarr")
        counts = change_outcomes(experiment.stimulus_presentations, experiment.trials).outcome.value_counts()
        assert (counts.get("hit", 0), counts.get("miss", 0), counts.get("auto_rewarded", 0)) == (
            row.hit_trial_count, row.miss_trial_count, row.auto_reward_count), row.ophys_session_id


def test_settings_of_how_files_are_fetched_rerun_nothing(demo_run, tmp_path):
    """After a finished run, changing how files are fetched (retries, connections, part size) or raising the
    selection's size limit, as its error message advises, plans no job: as params they re-ran the sync, which can move
    to a newer release, and everything after it. A setting that does change outputs still re-runs its rules."""
    def planned(settings: dict) -> str:
        extra = tmp_path / "extra.yaml"
        extra.write_text(yaml.safe_dump(settings))
        result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(demo_run),
                                 "--configfile", str(REPO / "config" / "demo.yaml"), str(extra), "-n"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    fetching = {"download": {"retries": 5, "concurrency": 3, "part_mb": 4, "max_selection_gb": 600}}
    assert "Nothing to be done" in planned(fetching)
    changed = planned({"extraction": {"time_chunk": 1024}})
    assert "Nothing to be done" not in changed and "extract_experiment" in changed


def test_a_narrower_selection_reruns_only_what_depends_on_the_whole_selection(demo_run, tmp_path):
    """Leaving out the Mesoscope experiments after a finished run re-makes the selection and the release-wide
    tables, not the kept experiments' downloads, stores, response stores or figures (response stores and alignments
    took the selection file as an input, and its new time re-ran all of them). (A Mesoscope plane whose session keeps
    fewer planes is extracted again: whether it reads its session's shared task or its own changes.)"""
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, symlinks=True)  # copies keep their times: the copy is as up to date as the run
    extra = tmp_path / "narrower.yaml"
    extra.write_text(yaml.safe_dump({"selection": {"query": "equipment_name != 'MESO.1'"}}))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(run),
                             "--configfile", str(REPO / "config" / "demo.yaml"), str(extra), "--cores", "2"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = set(re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):", result.stdout + result.stderr, flags=re.M))
    assert {"select_experiments", "zarr_index", "response_table"} <= ran, ran
    assert not ran & {"download_experiment", "session_task", "extract_experiment", "stimulus_responses",
                      "container_alignment", "session_population", "behavior_session"}, ran
