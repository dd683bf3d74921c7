"""Metadata tables loaded as AllenSDK loads them, the release overview and config-driven selection, on the real
tables of the release (tests/data/real_metadata) and on the demo release."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import DATA

from vb2p import layout
from vb2p.errors import SelectionError, TableError
from vb2p.overview import release_overview
from vb2p.selection import experiment_groups, select_experiments
from vb2p.tables import load_table, load_tables

REAL = DATA / "real_metadata"


@pytest.fixture(scope="module")
def real_tables():
    return {
        table: load_table(REAL / f"{table}.csv", table)
        for table in ("behavior_session_table", "ophys_session_table", "ophys_experiment_table")
    }


def test_real_tables_load_with_allensdk_types(real_tables):
    behavior = real_tables["behavior_session_table"]
    sessions = real_tables["ophys_session_table"]
    experiments = real_tables["ophys_experiment_table"]
    assert (len(behavior), len(sessions), len(experiments)) == (4787, 704, 1941)
    assert behavior.index.name == "behavior_session_id"
    assert sessions.index.name == "ophys_session_id" and experiments.index.name == "ophys_experiment_id"
    assert experiments.mouse_id.map(type).eq(str).all()
    assert str(experiments.date_of_acquisition.dt.tz) == "UTC" and str(behavior.date_of_acquisition.dt.tz) == "UTC"
    assert sessions.loc[951410079, "ophys_experiment_id"][:2] == [951980471, 951980473]
    assert sessions.loc[951410079, "ophys_container_id"][0] == 1018028339
    assert experiments.driver_line.map(type).eq(list).all()
    assert behavior.ophys_session_id.dtype == "Int64" and behavior.ophys_session_id.isna().sum() == 4083
    assert behavior.loc[951520319, "ophys_session_id"] == 951410079
    assert experiments.imaging_plane_group.dtype == "Int64"
    assert experiments.ophys_container_id.dtype == "int64"
    assert experiments.passive.dtype == bool


def test_overview_reproduces_the_tutorial_facts_on_the_real_tables(real_tables):
    overview = release_overview(real_tables)
    per_genotype = overview["mice_per_genotype"].set_index("full_genotype").n_mice
    assert per_genotype.sum() == 107
    assert per_genotype.to_dict() == {
        "Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt": 47,
        "Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai94(TITL-GCaMP6s)/wt": 8,
        "Sst-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt": 24,
        "Vip-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt": 28,
    }
    assert len(overview["mice_with_omissions_during_habituation"]) == 14
    summary = overview["summary"].set_index("quantity").value
    assert summary["mice"] == 107 and summary["ophys_experiments"] == 1941
    assert set(overview["equipment"].equipment_name) == {"CAM2P.3", "CAM2P.4", "CAM2P.5", "MESO.1"}
    lines = overview["lines_and_indicators"]
    assert set(lines.cre_line) == {"Slc17a7-IRES2-Cre", "Sst-IRES-Cre", "Vip-IRES-Cre"}
    assert set(lines.indicator) == {"GCaMP6f", "GCaMP6s"}
    codes = overview["behavior_session_project_codes"]
    assert len(codes) == 4787 and codes.project_code.notna().all()
    assert set(codes.project_code) == set(real_tables["ophys_session_table"].project_code)
    per_container = overview["experiments_per_container"]
    assert per_container.n_experiments.sum() == 1941
    depths = overview["depths_and_structures_per_project"]
    assert set(depths.targeted_structure) == {"VISp", "VISl", "VISal", "VISam"}
    assert depths.imaging_depth.min() >= 51 and depths.imaging_depth.max() <= 383


def test_selection_facts_on_the_real_tables(real_tables):
    experiments = real_tables["ophys_experiment_table"]
    sst_1b = select_experiments(
        experiments, filters={"cre_line": "Sst-IRES-Cre", "project_code": "VisualBehaviorTask1B"}
    )
    assert sst_1b.ophys_container_id.nunique() == 7
    one_container = select_experiments(
        experiments,
        filters={"cre_line": "Sst-IRES-Cre", "project_code": "VisualBehaviorTask1B", "ophys_container_id": 941373529},
    )
    assert sorted(one_container.index) == [955276580, 956903375, 957652800, 959337347, 960351917, 960960480]
    vip_session = select_experiments(
        experiments,
        filters={
            "cre_line": "Vip-IRES-Cre",
            "project_code": "VisualBehaviorMultiscope",
            "prior_exposures_to_image_set": 0,
            "ophys_session_id": 1050597678,
        },
    )
    assert len(vip_session) == 6
    assert list(vip_session.columns) == list(experiments.columns)


def test_selection_ranges_lists_queries_and_expansion(real_tables):
    experiments = real_tables["ophys_experiment_table"]
    deep = select_experiments(experiments, filters={"imaging_depth": {"min": 300}, "targeted_structure": ["VISp", "VISl"]})
    assert (deep.imaging_depth >= 300).all() and set(deep.targeted_structure) <= {"VISp", "VISl"}
    queried = select_experiments(experiments, query="imaging_depth > 300 and cre_line == 'Vip-IRES-Cre'")
    assert (queried.imaging_depth > 300).all() and set(queried.cre_line) == {"Vip-IRES-Cre"}
    by_mouse = select_experiments(experiments, filters={"mouse_id": 457841})  # YAML gives a number
    assert set(by_mouse.mouse_id) == {"457841"}
    by_driver = select_experiments(experiments, filters={"driver_line": "Camk2a-tTA"})
    assert set(by_driver.cre_line) == {"Slc17a7-IRES2-Cre"}
    one = select_experiments(experiments, filters={"ophys_experiment_id": 951980471})
    session = select_experiments(experiments, filters={"ophys_experiment_id": 951980471}, expand="session")
    container = select_experiments(experiments, filters={"ophys_experiment_id": 951980471}, expand="container")
    assert len(one) == 1
    assert set(session.ophys_session_id) == {951410079} and len(session) == 7
    assert set(container.ophys_container_id) == {one.ophys_container_id.iloc[0]} and len(container) > 1
    capped = select_experiments(experiments, filters={"cre_line": "Sst-IRES-Cre"}, max_containers=2)
    assert capped.ophys_container_id.nunique() == 2
    assert len(select_experiments(experiments)) == 1941  # no filters, no query: the whole release


def test_range_bounds_are_included_and_a_max_date_includes_its_day(real_tables):
    experiments = real_tables["ophys_experiment_table"]
    depth = experiments.imaging_depth
    assert (depth == 300).sum() > 0  # experiments on the bounds: what an exclusive bound would drop
    assert len(select_experiments(experiments, filters={"imaging_depth": {"min": 300}})) == (depth >= 300).sum()
    assert len(select_experiments(experiments, filters={"imaging_depth": {"max": 300}})) == (depth <= 300).sum()
    acquired = experiments.date_of_acquisition
    day = acquired.iloc[0].normalize()  # a session's day, midnight UTC: the session itself came later that day
    on_day = int(((acquired >= day) & (acquired < day + pd.Timedelta(days=1))).sum())
    for text in (day.strftime("%Y-%m-%d"), day.date()):  # quoted in YAML, and YAML's own date
        chosen = select_experiments(experiments, filters={"date_of_acquisition": {"min": text, "max": text}})
        assert len(chosen) == on_day and on_day > 0
        before = select_experiments(experiments, filters={"date_of_acquisition": {"max": text}})
        assert len(before) == int((acquired < day + pd.Timedelta(days=1)).sum())
    # a max with a time of day is that instant
    instant = acquired.iloc[0].strftime("%Y-%m-%dT%H:%M:%S")
    assert len(select_experiments(experiments, filters={"date_of_acquisition": {"max": instant}})) == int(
        (acquired <= pd.Timestamp(instant, tz="UTC")).sum())


def test_a_list_of_values_takes_each_and_refuses_a_typo_beside_a_good_one(real_tables):
    experiments = real_tables["ophys_experiment_table"]
    drivers = select_experiments(experiments, filters={"driver_line": ["Camk2a-tTA", "Vip-IRES-Cre"]})
    members = experiments.driver_line.map(lambda cell: bool({"Camk2a-tTA", "Vip-IRES-Cre"} & set(cell)))
    assert len(drivers) == int(members.sum()) and set(drivers.cre_line) == {"Slc17a7-IRES2-Cre", "Vip-IRES-Cre"}
    areas = select_experiments(experiments, filters={"targeted_structure": ["VISp", "VISl"]})
    assert len(areas) == int(experiments.targeted_structure.isin(["VISp", "VISl"]).sum())
    for column, values in (("driver_line", ["Camk2a-tTA", "Camk2a-tTa"]), ("cre_line", ["Sst-IRES-Cre", "Sst"])):
        with pytest.raises(SelectionError, match=rf"selection.filters.{column}: \['{values[1]}'\] match no experiment"):
            select_experiments(experiments, filters={column: values})


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"filters": {"cre_lin": "Sst-IRES-Cre"}}, "unknown columns ['cre_lin']"),
        ({"filters": {"cre_line": "Sst-IRES"}}, "Sst-IRES-Cre"),  # lists what exists
        ({"filters": {"imaging_depth": {"min": 500}}}, "range from 51"),
        ({"filters": {"imaging_depth": "deep"}}, "not a number"),
        ({"filters": {"equipment_name": "CAM2P.5", "targeted_structure": "VISam"}}, "not together"),
        ({"query": "imaging_dept > 3"}, "imaging_dept"),
        ({"query": "imaging_depth > 10000"}, "matches no experiment"),
    ],
)
def test_a_bad_or_empty_selection_is_an_error_that_lists_what_exists(real_tables, kwargs, named):
    with pytest.raises(SelectionError) as error:
        select_experiments(real_tables["ophys_experiment_table"], **kwargs)
    assert named in str(error.value)


def test_a_table_with_bad_cells_is_named(tmp_path):
    bad = tmp_path / "ophys_session_table.csv"
    frame = pd.read_csv(REAL / "ophys_session_table.csv", dtype=str).head(3)
    frame.loc[1, "ophys_experiment_id"] = "[951980471, oops"
    frame.to_csv(bad, index=False)
    with pytest.raises(TableError, match="ophys_session_table: column ophys_experiment_id, row 952430817"):
        load_table(bad, "ophys_session_table")
    frame.drop(columns="mouse_id").to_csv(bad, index=False)
    with pytest.raises(TableError, match="lacks columns \\['mouse_id'\\]"):
        load_table(bad, "ophys_session_table")


def test_demo_tables_load_and_agree_with_each_other(demo_root):
    tables = load_tables({t: demo_root / layout.metadata_key(t) for t in layout.METADATA_TABLES})
    experiments, cells = tables["ophys_experiment_table"], tables["ophys_cells_table"]
    assert cells.index.name == "cell_roi_id" and cells.cell_specimen_id.dtype == "Int64"
    assert cells.cell_specimen_id.isna().any()  # unmatched cells, NaN as AllenSDK returns them
    assert set(cells.ophys_experiment_id) == set(experiments.index)
    sessions = tables["ophys_session_table"]
    for session_id, row in sessions.iterrows():
        assert sorted(row.ophys_experiment_id) == sorted(experiments.index[experiments.ophys_session_id == session_id])
    overview = release_overview(tables)
    assert overview["summary"].set_index("quantity").value["mice"] == 3
    assert len(overview["mice_with_omissions_during_habituation"]) == 1  # the demo's Vip Multiscope mouse


def test_a_session_task_only_where_selected_planes_share_it(real_tables):
    """Rule session_task reads a task once for the selected planes of a session that share it; a session of one
    selected plane (every Scientifica session, a Mesoscope session cut down by the selection) has none."""
    experiments = real_tables["ophys_experiment_table"]
    groups = experiment_groups(experiments)
    planes = groups["sessions"]
    assert len(planes) == 704 and len(groups["task_sources"]) == 255
    assert all(len(planes[s]) > 1 and source == min(planes[s]) for s, source in groups["task_sources"].items())
    assert sum(len(planes[s]) for s in groups["task_sources"]) == 1492  # experiments that take a shared task
    mesoscope = experiments[experiments.equipment_name.str.startswith("MESO")]
    session = mesoscope.groupby("ophys_session_id").size().idxmax()  # a session of 8 planes
    one_plane = mesoscope[mesoscope.ophys_session_id == session].iloc[:1]
    assert experiment_groups(one_plane)["task_sources"] == {}
    assert experiment_groups(one_plane)["session_of"] == {int(one_plane.index[0]): int(session)}
