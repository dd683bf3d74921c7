"""Write a deterministic synthetic release in the exact layout of the Visual Behavior 2P bucket.

    <out>/visual-behavior-ophys/manifests/visual-behavior-ophys_project_manifest_v<version>.json
    <out>/visual-behavior-ophys/project_metadata/<table>.csv
    <out>/visual-behavior-ophys/behavior_ophys_experiments/behavior_ophys_experiment_<id>.nwb
    <out>/visual-behavior-ophys/behavior_sessions/behavior_session_<id>.nwb
    <out>/ground_truth/                            what the generator put in, the known answers of analyses:
        injected_shifts.csv, cell_matching.csv     views of a container; cells matched across sessions
        cell_responses.csv                         who responds to changes, omissions or which image, how strongly
        stimulus_presentations.csv, trials.csv,    each ophys session's task (behavior_session_id), as AllenSDK
        licks.csv, rewards.csv                     shows it before its own additions

Each experiment file is a whole change-detection session (vb2p.demo.task) with the plane's ophys data; AllenSDK's
BehaviorOphysExperiment.from_nwb_path reads it. Behavior-only files (training, habituation) hold metadata only.

Generating into a directory that already holds a release adds a manifest version: files whose content does not
change are kept as they are (same hash), and `revision` > 0 re-releases a subset of experiments with new content,
as Allen's later manifests did.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from vb2p import __version__, layout
from vb2p.demo import images, nwb, responses, tables, task, traces
from vb2p.demo.design import (
    FIELD_MARGIN_PX,
    BehaviorSession,
    DemoSize,
    Experiment,
    ReleaseDesign,
    demo_knob,
    design_release,
    random_stream,
)
from vb2p.errors import Vb2pError
from vb2p.files import atomic_write, file_blake2b
from vb2p.source import VERSIONS_DIR

GROUND_TRUTH_DIR = "ground_truth"
STATE_FILE = "demo_release.json"
VERSION_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._"
REVISED_EVERY = 3  # a revision re-releases every third experiment


def version_id_for(key: str, file_hash: str) -> str:
    """A 32-character S3-style version id, stable for the same content at the same key."""
    raw = hashlib.blake2b(key.encode() + bytes.fromhex(file_hash), digest_size=32).digest()
    return "".join(VERSION_ID_ALPHABET[b % 64] for b in raw)


def revised_experiments(design: ReleaseDesign, revision: int) -> frozenset[int]:
    if revision <= 0:
        return frozenset()
    return frozenset(e.ophys_experiment_id for e in design.experiments() if e.file_id % REVISED_EVERY == 0)


def _subject_info(design: ReleaseDesign, session: BehaviorSession) -> nwb.SubjectInfo:
    mouse = design.mice[session.mouse_index]
    genotype = mouse.genotype
    return nwb.SubjectInfo(
        mouse_id=mouse.mouse_id,
        full_genotype=genotype["full_genotype"],
        driver_line=genotype["driver_line"],
        reporter_line=genotype["reporter_line"],
        sex=mouse.plan.sex,
        age_in_days=(session.date_of_acquisition - mouse.date_of_birth).days,
    )


def _session_info(design: ReleaseDesign, session: BehaviorSession) -> nwb.SessionInfo:
    return nwb.SessionInfo(
        behavior_session_id=session.behavior_session_id,
        session_type=session.session_type,
        equipment_name=session.equipment_name,
        project_code=design.mice[session.mouse_index].plan.project_code,
        date_of_acquisition=session.date_of_acquisition,
        behavior_session_uuid=nwb.behavior_session_uuid(design.seed, session.behavior_session_id),
    )


def render_behavior(design: ReleaseDesign, session: BehaviorSession) -> nwb.BehaviorData:
    """The task and rig recordings of one ophys session, shared by all of its planes."""
    session_task = task.plan_session_task(design, session)
    rng = random_stream(design.seed, 21, session.behavior_session_id)
    times = session_task.frame_times
    running = task.running_wheel(rng, times)
    eye_tracking = None
    if session_task.has_eye_tracking:  # the camera starts within a second of the stimulus clock
        eye_tracking = task.eye_tracking(rng, times[0] + rng.uniform(0, 1), times[-1])
    return nwb.BehaviorData(
        task=session_task,
        presentations=task.stimulus_presentations(session_task),
        running=running,
        eye_tracking=eye_tracking,
        templates={name: images.stimulus_template(name) for name in session_task.image_names},
    )


def experiment_kinetics(design: ReleaseDesign, experiment: Experiment) -> responses.RoiKinetics:
    mouse = design.mice[design.session_of()[experiment.ophys_experiment_id].mouse_index]
    rng = random_stream(design.seed, 14, experiment.ophys_experiment_id)
    return responses.roi_kinetics(rng, len(experiment.cells), mouse.genotype["indicator"])


def render_experiment(
    design: ReleaseDesign, experiment: Experiment, content_revision: int, session_task: task.Task
) -> nwb.PlaneData:
    """All ophys arrays of one experiment file. content_revision > 0 changes the traces (a re-released file)."""
    seed = design.seed
    container = design.containers[experiment.ophys_container_id]
    session = design.session_of()[experiment.ophys_experiment_id]
    mouse = design.mice[session.mouse_index]
    field = images.container_field(
        random_stream(seed, 10, container.ophys_container_id),
        container.field_shape,
        container.neuron_y,
        container.neuron_x,
        container.neuron_radius,
    )
    rng = random_stream(seed, 11, experiment.ophys_experiment_id)
    present = {cell.neuron for cell in experiment.cells if cell.neuron >= 0}
    activity = rng.lognormal(0.0, 0.25, len(container.neuron_y))
    activity[[i for i in range(len(activity)) if i not in present]] *= 0.3
    unmatched = [cell for cell in experiment.cells if cell.neuron < 0]
    max_projection, average_image = images.session_projections(
        rng,
        field,
        container.neuron_y,
        container.neuron_x,
        container.neuron_radius,
        FIELD_MARGIN_PX,
        container.view_shape,
        (experiment.shift_y, experiment.shift_x),
        experiment.brightness_gain,
        activity,
        (
            np.array([c.center_y for c in unmatched]),
            np.array([c.center_x for c in unmatched]),
            np.array([c.radius for c in unmatched]),
        ),
    )
    masks = np.stack([images.roi_mask(container.view_shape, c.center_y, c.center_x, c.radius) for c in experiment.cells])
    clock = session_task.frame_times
    timestamps = traces.ophys_timestamps(
        random_stream(seed, 12, experiment.ophys_experiment_id), clock[0], clock[-1], mouse.frame_rate_hz
    )
    kinetics = experiment_kinetics(design, experiment)
    rng = random_stream(seed, 13, experiment.ophys_experiment_id, content_revision)
    events = responses.cell_events(
        rng, experiment.cells, session_task, mouse.plan.familiar_images, timestamps, kinetics
    )
    dff = traces.dff_from_events(rng, events, mouse.frame_rate_hz, kinetics.rise_s, kinetics.decay_s, kinetics.noise_sd)
    n_rois = len(experiment.cells)
    return nwb.PlaneData(
        timestamps=timestamps,
        dff=dff,
        events=events,
        lambdas=rng.uniform(0.03, 0.12, n_rois),
        noise_stds=kinetics.noise_sd,
        baseline_fluorescence=rng.uniform(150.0, 600.0, n_rois),
        motion_correction=np.cumsum(rng.normal(0, 0.05, (len(timestamps), 2)), axis=0).clip(-4, 4),
        cell_roi_id=np.array([c.cell_roi_id for c in experiment.cells], dtype=np.int64),
        cell_specimen_id=np.array([c.cell_specimen_id for c in experiment.cells], dtype=np.int64),
        valid_roi=np.array([c.valid_roi for c in experiment.cells], dtype=bool),
        image_mask=masks,
        bounding_boxes=np.array([images.mask_bounding_box(m) for m in masks], dtype=np.int64),
        max_projection=max_projection,
        average_image=average_image,
        all_traces=design.size.all_traces,
    )


def _plane_info(design: ReleaseDesign, session: BehaviorSession, experiment: Experiment) -> nwb.PlaneInfo:
    mouse = design.mice[session.mouse_index]
    groups = {e.imaging_plane_group for e in session.experiments if e.imaging_plane_group is not None}
    return nwb.PlaneInfo(
        ophys_experiment_id=experiment.ophys_experiment_id,
        ophys_session_id=session.ophys_session_id,
        ophys_container_id=experiment.ophys_container_id,
        imaging_depth=experiment.imaging_depth,
        targeted_imaging_depth=design.containers[experiment.ophys_container_id].depth,
        targeted_structure=experiment.targeted_structure,
        imaging_plane_group=-1 if experiment.imaging_plane_group is None else experiment.imaging_plane_group,
        imaging_plane_group_count=len(groups),
        indicator=mouse.genotype["indicator"],
        imaging_rate_hz=float(round(mouse.frame_rate_hz)),
    )


def retire_version(root: Path, key: str) -> None:
    """Keep the current version of a file that is about to change, as a versioned bucket keeps old versions:
    under <root>/.versions/<version_id>/<key>, where a local mirror serves a pinned older version from."""
    current = root / key
    retired = root / VERSIONS_DIR / version_id_for(key, file_blake2b(current)) / key
    retired.parent.mkdir(parents=True, exist_ok=True)
    os.replace(current, retired)


def write_experiment_file(args) -> tuple[str, str]:
    seed, size, experiment_id, content_revision, path = args
    design = design_release(seed, size)
    session = design.session_of()[experiment_id]
    experiment = next(e for e in session.experiments if e.ophys_experiment_id == experiment_id)
    behavior = render_behavior(design, session)
    data = render_experiment(design, experiment, content_revision, behavior.task)
    atomic_write(
        path,
        lambda p: nwb.write_experiment(
            p,
            _session_info(design, session),
            _subject_info(design, session),
            _plane_info(design, session, experiment),
            data,
            behavior,
        ),
    )
    return str(path), file_blake2b(path)


def _write_behavior_file(args) -> tuple[str, str]:
    seed, size, behavior_session_id, path = args
    design = design_release(seed, size)
    session = next(s for s in design.sessions if s.behavior_session_id == behavior_session_id)
    atomic_write(path, lambda p: nwb.write_behavior_session(p, _session_info(design, session), _subject_info(design, session)))
    return str(path), file_blake2b(path)


def generate_release(
    out_dir: str | Path,
    seed: int = 0,
    size: DemoSize | None = None,
    manifest_version: str | None = None,
    revision: int = 0,
    workers: int = 1,
) -> Path:
    """Write (or extend) a demo release under out_dir; returns the release root (<out_dir>/visual-behavior-ophys).
    size and manifest_version default to the config schema's demo defaults."""
    size = size or DemoSize()
    manifest_version = manifest_version or demo_knob("manifest_version")
    out_dir = Path(out_dir)
    root = out_dir / layout.RELEASE_PREFIX
    truth_dir = out_dir / GROUND_TRUTH_DIR
    truth_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(truth_dir, seed, size)
    design = design_release(seed, size)
    revised = revised_experiments(design, revision)

    for table_name, table in (
        ("behavior_session_table", tables.behavior_session_table(design)),
        ("ophys_session_table", tables.ophys_session_table(design)),
        ("ophys_experiment_table", tables.ophys_experiment_table(design, revised, revision)),
        ("ophys_cells_table", tables.ophys_cells_table(design)),
    ):
        key = layout.metadata_key(table_name)
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path.with_name("." + path.name), lambda p, t=table: tables.write_table_text(t, p))
        if path.exists() and file_blake2b(path) != file_blake2b(path.with_name("." + path.name)):
            retire_version(root, key)
        os.replace(path.with_name("." + path.name), path)

    jobs_experiment, jobs_behavior = [], []
    for experiment in design.experiments():
        key = layout.experiment_key(experiment.ophys_experiment_id)
        content_revision = revision if experiment.ophys_experiment_id in revised else state["files"].get(key, {}).get("revision", 0)
        if not _is_current(root / key, state["files"].get(key), content_revision):
            if (root / key).exists():
                retire_version(root, key)
            jobs_experiment.append((seed, size, experiment.ophys_experiment_id, content_revision, root / key))
            state["files"][key] = {"revision": content_revision}
    for session in design.sessions:
        if session.is_ophys:
            continue
        key = layout.behavior_session_key(session.behavior_session_id)
        if not _is_current(root / key, state["files"].get(key), 0):
            jobs_behavior.append((seed, size, session.behavior_session_id, root / key))
            state["files"][key] = {"revision": 0}

    hashes: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=max(1, workers)) if workers > 1 else _Serial() as pool:
        for path, file_hash in list(pool.map(write_experiment_file, jobs_experiment)) + list(
            pool.map(_write_behavior_file, jobs_behavior)
        ):
            hashes[str(Path(path).relative_to(root))] = file_hash
    for key, file_hash in hashes.items():
        stat = (root / key).stat()
        state["files"][key].update(file_hash=file_hash, size=stat.st_size, mtime_ns=stat.st_mtime_ns)

    manifest = build_manifest(root, design, manifest_version, state)
    manifest_path = root / layout.manifest_key(manifest_version)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest_path, lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n"))
    (root / "release_notes.txt").write_text(
        f"Synthetic demo release (vb2p {__version__}, seed {seed}); manifest versions: "
        + ", ".join(sorted(set(state["manifests"]) | {manifest_version}))
        + "\n"
    )
    state["manifests"][manifest_version] = {"revision": revision, "revised_experiments": sorted(revised)}
    write_ground_truth(truth_dir, design)
    (truth_dir / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return root


class _Serial:
    """The executor interface without processes, for workers=1 (simpler tracebacks, no pickling)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(function, items):
        return map(function, items)


def _load_state(truth_dir: Path, seed: int, size: DemoSize) -> dict:
    """What an earlier run wrote here; a release made with other knobs cannot be extended."""
    path = truth_dir / STATE_FILE
    if not path.exists():
        return {"seed": seed, "size": asdict(size), "files": {}, "manifests": {}}
    state = json.loads(path.read_text())
    if state["seed"] != seed or state["size"] != asdict(size):
        raise Vb2pError(
            f"{path.parent.parent} holds a demo release made with seed {state['seed']} and size {state['size']}; "
            f"asked for seed {seed} and size {asdict(size)}. Use another output directory or delete this one."
        )
    return state


def _is_current(path: Path, record: dict | None, content_revision: int) -> bool:
    """True when the file on disk is the complete file of this content revision (checked by size and mtime)."""
    if record is None or not path.exists() or record.get("revision") != content_revision:
        return False
    stat = path.stat()
    return record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns


def _entry(key: str, file_hash: str) -> dict[str, str]:
    return {"url": layout.public_url(key), "version_id": version_id_for(key, file_hash), "file_hash": file_hash}


def build_manifest(root: Path, design: ReleaseDesign, manifest_version: str, state: dict) -> dict:
    metadata_files = {}
    for table_name in layout.METADATA_TABLES:
        key = layout.metadata_key(table_name)
        metadata_files[table_name] = _entry(key, file_blake2b(root / key))
    data_files = {}
    for experiment in design.experiments():
        key = layout.experiment_key(experiment.ophys_experiment_id)
        data_files[str(experiment.file_id)] = _entry(key, state["files"][key]["file_hash"])
    for session in design.sessions:
        if not session.is_ophys:
            key = layout.behavior_session_key(session.behavior_session_id)
            data_files[str(session.file_id)] = _entry(key, state["files"][key]["file_hash"])
    return {
        "project_name": layout.PROJECT_NAME,
        "manifest_version": manifest_version,
        "metadata_file_id_column_name": "file_id",
        "data_pipeline": [
            {"name": "AllenSDK", "version": "2.16.0", "comment": f"synthetic demo release written by vb2p {__version__}"}
        ],
        "metadata_files": metadata_files,
        "data_files": data_files,
    }


def _write_truth(table: pd.DataFrame, path: Path, float_format: str) -> None:
    table.to_csv(path, index=False, float_format=float_format, lineterminator="\n")


def cell_responses(design: ReleaseDesign) -> pd.DataFrame:
    """Who responds to what in each experiment: response type, preferred image (image cells, in the session's image
    set), amplitude (summed event amplitude of one response, dF/F) and the ROI's trace parameters."""
    rows = []
    for session in design.sessions:
        familiar = design.mice[session.mouse_index].plan.familiar_images
        for experiment in session.experiments:
            kinetics = experiment_kinetics(design, experiment)
            for roi, cell in enumerate(experiment.cells):
                rows.append(
                    {
                        "ophys_experiment_id": experiment.ophys_experiment_id,
                        "ophys_container_id": experiment.ophys_container_id,
                        "behavior_session_id": session.behavior_session_id,
                        "cell_roi_id": cell.cell_roi_id,
                        "cell_specimen_id": cell.cell_specimen_id,
                        "valid_roi": cell.valid_roi,
                        "response_type": cell.response.response_type,
                        "preferred_image": responses.preferred_image(
                            cell, session.image_set.removeprefix("images_"), familiar
                        ),
                        "amplitude": cell.response.amplitude,
                        "rise_s": kinetics.rise_s[roi],
                        "decay_s": kinetics.decay_s[roi],
                        "noise_sd": kinetics.noise_sd[roi],
                        "spontaneous_rate_hz": kinetics.spontaneous_rate_hz[roi],
                    }
                )
    return pd.DataFrame(rows)


def write_task_truth(truth_dir: Path, design: ReleaseDesign) -> None:
    """The task of every ophys session: presentations, trials, licks and rewards, keyed by behavior_session_id."""
    tables_of: dict[str, list[pd.DataFrame]] = {"stimulus_presentations": [], "trials": [], "licks": [], "rewards": []}
    for session in design.sessions:
        if not session.is_ophys:
            continue
        planned = task.plan_session_task(design, session)
        key = {"behavior_session_id": session.behavior_session_id}
        licks = pd.DataFrame({"frame": planned.lick_frames, "timestamps": planned.lick_times})
        for name, table in (
            ("stimulus_presentations", task.stimulus_presentations(planned).reset_index()),
            ("trials", planned.trials.drop(columns="lick_times").reset_index()),
            ("licks", licks),
            ("rewards", planned.rewards),
        ):
            tables_of[name].append(table.assign(**key)[["behavior_session_id", *table.columns]])
    for name, parts in tables_of.items():
        _write_truth(pd.concat(parts, ignore_index=True), truth_dir / f"{name}.csv", "%.9f")


def write_ground_truth(truth_dir: Path, design: ReleaseDesign) -> None:
    """What the generator put in, for tests and analyses: injected shifts, the cell matching across sessions, who
    responds to what, and each session's task."""
    _write_truth(cell_responses(design), truth_dir / "cell_responses.csv", "%.6f")
    write_task_truth(truth_dir, design)
    session_of = design.session_of()
    shifts = pd.DataFrame(
        [
            {
                "ophys_container_id": e.ophys_container_id,
                "ophys_experiment_id": e.ophys_experiment_id,
                "date_of_acquisition": session_of[e.ophys_experiment_id].date_of_acquisition.isoformat(),
                "shift_y": e.shift_y,
                "shift_x": e.shift_x,
                "brightness_gain": e.brightness_gain,
            }
            for e in design.experiments()
        ]
    )
    _write_truth(shifts, truth_dir / "injected_shifts.csv", "%.6f")
    cells = pd.DataFrame(
        [
            {
                "ophys_experiment_id": e.ophys_experiment_id,
                "ophys_container_id": e.ophys_container_id,
                "cell_roi_id": c.cell_roi_id,
                "cell_specimen_id": c.cell_specimen_id,
                "valid_roi": c.valid_roi,
                "container_neuron": c.neuron,
                "center_y": c.center_y,
                "center_x": c.center_x,
            }
            for e in design.experiments()
            for c in e.cells
        ]
    )
    _write_truth(cells, truth_dir / "cell_matching.csv", "%.4f")
