"""Write demo NWB files with pynwb at the HDF5 paths, dtypes and neurodata types of the released files (layout
document sections 5 and 5b), with the four Allen extensions the released files cache (ndx/: their specs as the
AllenSDK-written reference file caches them). Experiment files hold a whole change-detection session, laid out the
way AllenSDK 2.16's writer lays it out, so its `BehaviorOphysExperiment.from_nwb_path` reads them."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pynwb
from hdmf.backends.hdf5 import H5DataIO
from hdmf.build import BuildManager
from hdmf.common import ElementIdentifiers, VectorData, VectorIndex
from pynwb.base import Images, TimeSeries, TimeSeriesReference, TimeSeriesReferenceVectorData
from pynwb.behavior import SpatialSeries
from pynwb.epoch import TimeIntervals
from pynwb.image import GrayscaleImage
from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel, PlaneSegmentation

from vb2p.demo.task import (
    AUTO_REWARD_VOLUME_ML,
    FLASH_S,
    IMAGE_S,
    OMITTED_FLASH_FRACTION,
    RESPONSE_WINDOW_S,
    REWARD_VOLUME_ML,
    STIMULUS_FRAME_RATE_HZ,
    Task,
)

NDX_DIR = Path(__file__).resolve().parent / "ndx"
NAMESPACES = (
    "ndx-aibs-behavior-ophys",
    "ndx-aibs-ophys-event-detection",
    "ndx-aibs-stimulus-template",
    "ndx-ellipse-eye-tracking",
)
IMAGE_RESOLUTION = 7.8125e-05  # the value the released files give for GrayscaleImage.resolution
# Where the released files' eye-tracking rig sat (AllenSDK's RigGeometry: positions in mm, rotations in degrees).
EYE_TRACKING_RIG = {
    "monitor_position": [118.6, 86.2, 31.6],
    "monitor_rotation": [0.0, 0.0, 0.0],
    "camera_position": [130.0, 0.0, 0.0],
    "camera_rotation": [0.0, 0.0, 13.1],
    "led_position": [265.1, -39.3, 1.0],
}
PRESENTATION_DESCRIPTION = (
    "Presentation times and stimuli details for '{}' stimuli. \nNote: image_name references control_description in "
    "stimulus/templates"
)
TRIAL_COLUMNS = {
    "initial_image_name": "image shown when the trial started",
    "change_image_name": "image after the change (the initial image on catch and aborted trials)",
    "is_change": "the image changed in this trial",
    "change_time": "time of the (sham) change on the screen, s",
    "go": "a change trial the mouse could earn a reward in",
    "catch": "a sham-change trial: the image did not change",
    "lick_times": "times of the licks in this trial, s",
    "response_time": "time of the first lick in the response window, s",
    "response_latency": "response_time - change_time (inf: no response), s",
    "reward_time": "time of the reward, s",
    "reward_volume": "volume of the reward, mL",
    "hit": "go trial with a lick in the response window",
    "false_alarm": "catch trial with a lick in the response window",
    "miss": "go trial without a lick in the response window",
    "correct_reject": "catch trial without a lick in the response window",
    "aborted": "the mouse licked before the change",
    "auto_rewarded": "a free reward came with the change",
    "change_frame": "stimulus frame of the (sham) change (-99: none)",
    "trial_length": "stop_time - start_time, s",
}


@cache
def extension_classes() -> SimpleNamespace:
    """The Allen extension types, generated from our copies of the namespaces the released files cache."""
    for namespace in NAMESPACES:
        pynwb.load_namespaces(str(NDX_DIR / f"{namespace}.namespace.yaml"))
    names = {
        "ndx-aibs-behavior-ophys": (
            "BehaviorSubject",
            "BehaviorMetadata",
            "OphysBehaviorMetadata",
            "BehaviorTaskParameters",
            "OphysEyeTrackingRigMetadata",
        ),
        "ndx-aibs-ophys-event-detection": ("OphysEventDetection",),
        "ndx-aibs-stimulus-template": ("StimulusTemplate",),
        "ndx-ellipse-eye-tracking": ("EllipseSeries", "EllipseEyeTracking"),
    }
    return SimpleNamespace(
        **{name: pynwb.get_class(name, namespace) for namespace, types in names.items() for name in types}
    )


@dataclass
class SubjectInfo:
    mouse_id: str
    full_genotype: str
    driver_line: list[str]
    reporter_line: str
    sex: str
    age_in_days: int


@dataclass
class SessionInfo:
    behavior_session_id: int
    session_type: str
    equipment_name: str
    project_code: str
    date_of_acquisition: dt.datetime
    behavior_session_uuid: str


@dataclass
class PlaneInfo:
    ophys_experiment_id: int
    ophys_session_id: int
    ophys_container_id: int
    imaging_depth: int
    targeted_imaging_depth: int
    targeted_structure: str
    imaging_plane_group: int  # -1 on single-plane rigs
    imaging_plane_group_count: int  # 0 on single-plane rigs
    indicator: str
    imaging_rate_hz: float  # rounded, as the released files store it


@dataclass
class PlaneData:
    timestamps: np.ndarray  # (n_frames,) float64 seconds
    dff: np.ndarray  # (n_frames, n_rois) float64
    events: np.ndarray  # (n_frames, n_rois) float64: the events behind dff
    lambdas: np.ndarray  # (n_rois,) event detection's regularisation
    noise_stds: np.ndarray  # (n_rois,) noise of dff
    baseline_fluorescence: np.ndarray  # (n_rois,) F0: corrected fluorescence is F0 * (1 + dff)
    motion_correction: np.ndarray  # (n_frames, 2) float64 pixels: x, y
    cell_roi_id: np.ndarray  # (n_rois,) int64
    cell_specimen_id: np.ndarray  # (n_rois,) int64, -1 unmatched
    valid_roi: np.ndarray  # (n_rois,) bool
    image_mask: np.ndarray  # (n_rois, H, W) bool
    bounding_boxes: np.ndarray  # (n_rois, 4) int64: x, y, width, height
    max_projection: np.ndarray  # (H, W) uint8
    average_image: np.ndarray  # (H, W) uint8
    all_traces: bool = False


@dataclass
class BehaviorData:
    """The session's task and what the rig recorded around it, shared by every plane of the session."""

    task: Task
    presentations: pd.DataFrame  # vb2p.demo.task.stimulus_presentations(task)
    running: dict[str, np.ndarray]  # vb2p.demo.task.running_wheel
    eye_tracking: pd.DataFrame | None  # vb2p.demo.task.eye_tracking; None: this session has none
    templates: dict[str, tuple[np.ndarray, np.ndarray]]  # image name -> (warped, unwarped), in image_index order


def _subject(info: SubjectInfo):
    return extension_classes().BehaviorSubject(
        subject_id=info.mouse_id,
        genotype=info.full_genotype,
        sex=info.sex,
        age=f"P{info.age_in_days}D",
        species="Mus musculus",
        description="A visual behavior subject with a LabTracks ID",
        driver_line=list(info.driver_line),
        reporter_line=info.reporter_line,
    )


def _nwbfile(identifier: str, session: SessionInfo, subject: SubjectInfo, **contents) -> pynwb.NWBFile:
    return pynwb.NWBFile(
        session_description=session.session_type,
        identifier=identifier,
        session_start_time=session.date_of_acquisition,
        file_create_date=session.date_of_acquisition,
        institution="Allen Institute for Brain Science",
        keywords=["2-photon", "calcium imaging", "visual cortex", "behavior", "task"],
        experiment_description="Synthetic demo release in the layout of the Visual Behavior 2P release",
        subject=_subject(subject),
        **contents,
    )


@cache
def _type_map():
    """One copy of pynwb's type map with our extensions per process: making one per file costs more than small
    files take to write."""
    extension_classes()
    return pynwb.get_type_map()


def _write(nwbfile: pynwb.NWBFile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pynwb.NWBHDF5IO(str(path), "w", manager=BuildManager(_type_map())) as io:
        io.write(nwbfile)


def _behavior_metadata(session: SessionInfo) -> dict:
    """The attributes of /general/metadata that behavior-only and ophys files share."""
    return {
        "name": "metadata",
        "behavior_session_id": session.behavior_session_id,
        "behavior_session_uuid": session.behavior_session_uuid,
        "equipment_name": session.equipment_name,
        "project_code": session.project_code,
        "session_type": session.session_type,
        "stimulus_frame_rate": STIMULUS_FRAME_RATE_HZ,
    }


def write_behavior_session(path: Path, session: SessionInfo, subject: SubjectInfo) -> None:
    """A behavior-only session file (training, habituation): metadata only in the demo."""
    nwbfile = _nwbfile(str(session.behavior_session_id), session, subject)
    nwbfile.add_lab_meta_data(extension_classes().BehaviorMetadata(**_behavior_metadata(session)))
    _write(nwbfile, path)


def write_experiment(
    path: Path, session: SessionInfo, subject: SubjectInfo, plane: PlaneInfo, data: PlaneData, behavior: BehaviorData
) -> None:
    """One behavior_ophys_experiment_<id>.nwb file: the plane's ophys data and the session's task."""
    classes = extension_classes()
    height, width = data.max_projection.shape
    nwbfile = _nwbfile(
        str(plane.ophys_experiment_id), session, subject, trials=_trials(behavior.task.trials)
    )
    nwbfile.add_lab_meta_data(
        classes.OphysBehaviorMetadata(
            **_behavior_metadata(session),
            ophys_experiment_id=plane.ophys_experiment_id,
            ophys_session_id=plane.ophys_session_id,
            ophys_container_id=plane.ophys_container_id,
            imaging_depth=plane.imaging_depth,
            targeted_imaging_depth=plane.targeted_imaging_depth,
            field_of_view_width=width,
            field_of_view_height=height,
            imaging_plane_group=plane.imaging_plane_group,
            imaging_plane_group_count=plane.imaging_plane_group_count,
        )
    )
    _add_task(nwbfile, session, behavior)
    _add_ophys(nwbfile, session, plane, data)
    _write(nwbfile, path)


def _add_ophys(nwbfile: pynwb.NWBFile, session: SessionInfo, plane: PlaneInfo, data: PlaneData) -> None:
    height, width = data.max_projection.shape
    device = nwbfile.create_device(name=session.equipment_name, description="Allen Brain Observatory two-photon rig")
    channel = OpticalChannel(name="channel_1", description="2P Optical Channel", emission_lambda=520.0)
    imaging_plane = nwbfile.create_imaging_plane(
        name="imaging_plane_1",
        optical_channel=channel,
        description=f"({width}, {height}) field of view in {plane.targeted_structure} at depth {plane.imaging_depth} um",
        device=device,
        excitation_lambda=910.0,
        imaging_rate=plane.imaging_rate_hz,
        indicator=plane.indicator,
        location=plane.targeted_structure,
    )
    ophys = nwbfile.create_processing_module("ophys", "Ophys processing module")
    segmentation = ImageSegmentation(name="image_segmentation")
    ophys.add(segmentation)
    n_rois = len(data.cell_roi_id)
    columns = {
        "cell_specimen_id": data.cell_specimen_id.astype(np.int64),
        "height": data.bounding_boxes[:, 3].astype(np.int64),
        "width": data.bounding_boxes[:, 2].astype(np.int64),
        "x": data.bounding_boxes[:, 0].astype(np.int64),
        "y": data.bounding_boxes[:, 1].astype(np.int64),
        "mask_image_plane": np.zeros(n_rois, dtype=np.int64),
        "max_correction_down": np.full(n_rois, 6.0),
        "max_correction_left": np.full(n_rois, 5.0),
        "max_correction_right": np.full(n_rois, 7.0),
        "max_correction_up": np.full(n_rois, 4.0),
        "valid_roi": data.valid_roi.astype(bool),
        "image_mask": data.image_mask.astype(bool),
    }
    # Built whole (not ROI by ROI): the id column is cell_roi_id, as in the released files.
    table = PlaneSegmentation(
        name="cell_specimen_table",
        description="Segmented rois",
        imaging_plane=imaging_plane,
        id=ElementIdentifiers(name="id", data=data.cell_roi_id.astype(np.int64)),
        columns=[VectorData(name=k, description=k.replace("_", " "), data=v) for k, v in columns.items()],
        colnames=list(columns),
    )
    segmentation.add_plane_segmentation(table)

    def rois(description: str):
        return table.create_roi_table_region(description=description, region=list(range(n_rois)))

    # Containers join the file before their series, so every DynamicTableRegion shares an ancestor with its table.
    dff = DfOverF(name="dff")
    ophys.add(dff)
    traces = dff.create_roi_response_series(
        name="traces", data=data.dff, rois=rois("segmented cells labeled by cell_specimen_id"), unit="NA",
        timestamps=data.timestamps,
    )
    corrected = Fluorescence(name="corrected_fluorescence")
    ophys.add(corrected)
    corrected.create_roi_response_series(
        name="traces", data=data.baseline_fluorescence * (1.0 + data.dff), rois=rois("segmented cells"), unit="NA",
        timestamps=traces,
    )
    # Neuropil-subtraction fit per ROI (AllenSDK reads them with the corrected traces).
    for name, values in (("r", np.full(n_rois, 0.7)), ("RMSE", data.noise_stds * data.baseline_fluorescence)):
        corrected.create_roi_response_series(
            name=name, data=values, rois=rois("segmented cells"), unit="NA", timestamps=np.zeros(n_rois)
        )
    if data.all_traces:
        _add_demixed_and_neuropil(ophys, rois, data, traces)
    ophys.add(
        extension_classes().OphysEventDetection(
            data=H5DataIO(data.events, compression="gzip"),
            rois=rois("Cells with detected events"),
            unit="N/A",
            timestamps=traces,
            lambdas=data.lambdas,
            noise_stds=data.noise_stds,
        )
    )
    for axis, values in zip("xy", data.motion_correction.T):
        ophys.add(TimeSeries(name=f"ophys_motion_correction_{axis}", data=values, unit="pixels", timestamps=traces))
    segmentation_image = np.zeros((height, width), dtype=np.int64)
    for label, mask in enumerate(data.image_mask, start=1):
        segmentation_image[mask] = label
    ophys.add(
        Images(
            name="images",
            images=[
                GrayscaleImage(name="max_projection", data=data.max_projection, resolution=IMAGE_RESOLUTION,
                               description="max_projection image at pixels/cm resolution"),
                GrayscaleImage(name="average_image", data=data.average_image, resolution=IMAGE_RESOLUTION,
                               description="average_image image at pixels/cm resolution"),
                GrayscaleImage(name="segmentation_mask_image", data=segmentation_image, resolution=IMAGE_RESOLUTION,
                               description="segmentation_mask_image image at pixels/cm resolution"),
            ],
        )
    )


def _add_demixed_and_neuropil(ophys, rois, data: PlaneData, traces: TimeSeries) -> None:
    """The other (n_frames, n_rois) float64 matrices of the released files; they make up most of a file's size."""
    corrected = data.baseline_fluorescence * (1.0 + data.dff)
    neuropil = 0.7 * data.baseline_fluorescence + 5.0 * np.sin(data.timestamps / 30.0)[:, None]
    for name, values in (("demixed_trace", corrected + 0.7 * neuropil), ("neuropil_trace", neuropil)):
        fluorescence = Fluorescence(name=name)
        ophys.add(fluorescence)
        fluorescence.create_roi_response_series(
            name="traces", data=values, rois=rois("segmented cells"), unit="NA", timestamps=traces
        )


def _add_task(nwbfile: pynwb.NWBFile, session: SessionInfo, behavior: BehaviorData) -> None:
    task = behavior.task
    classes = extension_classes()
    stimulus = nwbfile.create_processing_module("stimulus", "Stimulus Times processing")
    timestamps = TimeSeries(name="timestamps", data=task.stimulus_timestamps, timestamps=task.stimulus_timestamps,
                            unit="s")
    stimulus.add(timestamps)
    running = nwbfile.create_processing_module("running", "Running speed processing module")
    speed = TimeSeries(name="speed", data=behavior.running["speed"], timestamps=task.frame_times, unit="cm/s")
    running.add(speed)
    running.add(TimeSeries(name="speed_unfiltered", data=behavior.running["speed_unfiltered"], timestamps=speed,
                           unit="cm/s"))
    running.add(TimeSeries(name="dx", data=behavior.running["dx"], timestamps=speed, unit="cm",
                           description="Running wheel angular change, computed during data collection"))
    nwbfile.add_acquisition(TimeSeries(name="v_sig", data=behavior.running["v_sig"], timestamps=speed, unit="V",
                                       description="Voltage signal from the running wheel encoder"))
    nwbfile.add_acquisition(TimeSeries(name="v_in", data=behavior.running["v_in"], timestamps=speed, unit="V",
                                       description="The theoretical maximum voltage that the running wheel encoder "
                                       "will reach prior to wrapping"))
    # Passive sessions have no lick or reward module, as AllenSDK writes them.
    if len(task.lick_frames):
        licking = nwbfile.create_processing_module("licking", "Licking behavior processing module")
        licking.add(TimeSeries(name="licks", data=task.lick_frames, timestamps=task.lick_times, unit="N/A",
                               description="Timestamps and stimulus presentation frame indices for lick events"))
    if len(task.rewards):
        rewards = nwbfile.create_processing_module("rewards", "Licking behavior processing module")
        volume = TimeSeries(name="volume", data=task.rewards.volume.to_numpy(),
                            timestamps=task.rewards.timestamps.to_numpy(), unit="mL")
        rewards.add(volume)
        rewards.add(TimeSeries(name="autorewarded", data=task.rewards.auto_rewarded.to_numpy(), timestamps=volume,
                               unit="mL"))
    for name, table in behavior.presentations.groupby("stimulus_name", sort=True):
        nwbfile.add_time_intervals(_presentation_intervals(name, table, timestamps))
    template = classes.StimulusTemplate(
        name=task.stimulus_name,
        data=np.stack([warped for warped, _ in behavior.templates.values()]),
        unwarped=np.stack([unwarped for _, unwarped in behavior.templates.values()]),
        control=np.arange(len(behavior.templates), dtype=np.uint8),
        control_description=list(behavior.templates),
        unit="NA",
        format="raw",
        timestamps=np.full(len(behavior.templates), np.nan),
    )
    nwbfile.add_stimulus_template(template)
    nwbfile.add_lab_meta_data(
        classes.BehaviorTaskParameters(
            name="task_parameters",
            auto_reward_volume=AUTO_REWARD_VOLUME_ML,
            blank_duration_sec=np.array([str(FLASH_S - IMAGE_S)] * 2),
            n_stimulus_frames=len(task.frame_times),
            omitted_flash_fraction=OMITTED_FLASH_FRACTION if task.flashes.omitted.any() else np.nan,
            response_window_sec=np.array([str(v) for v in RESPONSE_WINDOW_S]),
            reward_volume=REWARD_VOLUME_ML,
            session_type=session.session_type,
            stimulus="images",
            stimulus_distribution="geometric",
            stimulus_duration_sec=IMAGE_S,
            stimulus_name=task.stimulus_name,
            task="change detection",
        )
    )
    if behavior.eye_tracking is not None:
        _add_eye_tracking(nwbfile, session, behavior.eye_tracking)


def _table_columns(table: pd.DataFrame) -> list:
    """VectorData columns of a whole table; a ragged column (arrays per row) gets its VectorIndex."""
    columns = []
    for name, values in table.items():
        description = TRIAL_COLUMNS.get(name, "No description")
        if values.dtype == object and len(values) and isinstance(values.iloc[0], np.ndarray):
            flat = VectorData(name=name, description=description,
                              data=np.concatenate([np.asarray(v, np.float64) for v in values] + [np.empty(0)]))
            ends = np.cumsum([len(v) for v in values])
            columns += [flat, VectorIndex(name=f"{name}_index", data=ends, target=flat)]
        else:
            columns.append(VectorData(name=name, description=description, data=values.to_numpy()))
    return columns


def _time_intervals(name: str, description: str, table: pd.DataFrame, extra_columns=()) -> TimeIntervals:
    columns = _table_columns(table) + list(extra_columns)
    return TimeIntervals(
        name=name,
        description=description,
        id=ElementIdentifiers(name="id", data=np.arange(len(table), dtype=np.int64)),
        columns=columns,
        colnames=[c.name for c in columns if not isinstance(c, VectorIndex)],
    )


def _trials(trials: pd.DataFrame) -> TimeIntervals:
    return _time_intervals("trials", "experimental trials", trials)


def _presentation_intervals(stimulus_name: str, table: pd.DataFrame, timestamps: TimeSeries) -> TimeIntervals:
    """One stimulus's presentations the way AllenSDK's writer stores them: columns missing for this stimulus are
    dropped, nullable booleans are stored as floats (NaN = missing), and each row points at its display frames."""
    table = table.dropna(axis=1, how="all")
    table = table.astype({c: np.float64 for c in table.columns if table[c].dtype == "boolean"})
    front = ["start_time", "stop_time"]
    table = table[front + [c for c in table.columns if c not in front]]
    n = len(table)
    tags = VectorData(name="tags", description="user-defined tags", data=["stimulus_time_interval"] * n)
    frames = TimeSeriesReferenceVectorData(
        name="timeseries",
        description="index into a TimeSeries object",
        data=[
            TimeSeriesReference(int(start), int(stop - start), timestamps)
            for start, stop in zip(table.start_frame, table.end_frame)
        ],
    )
    extra = [
        tags,
        VectorIndex(name="tags_index", data=np.arange(1, n + 1), target=tags),
        frames,
        VectorIndex(name="timeseries_index", data=np.arange(1, n + 1), target=frames),
    ]
    return _time_intervals(
        f"{stimulus_name}_presentations", PRESENTATION_DESCRIPTION.format(stimulus_name), table, extra
    )


def _add_eye_tracking(nwbfile: pynwb.NWBFile, session: SessionInfo, eye: pd.DataFrame) -> None:
    classes = extension_classes()
    series = {}
    for name, prefix in (("eye_tracking", "eye"), ("pupil_tracking", "pupil"), ("corneal_reflection_tracking", "cr")):
        series[name] = classes.EllipseSeries(
            name=name,
            reference_frame="nose",
            data=eye[[f"{prefix}_center_x", f"{prefix}_center_y"]].to_numpy(),
            area=eye[f"{prefix}_area"].to_numpy(),
            area_raw=eye[f"{prefix}_area_raw"].to_numpy(),
            width=eye[f"{prefix}_width"].to_numpy(),
            height=eye[f"{prefix}_height"].to_numpy(),
            angle=eye[f"{prefix}_phi"].to_numpy(),
            timestamps=eye.timestamps.to_numpy() if not series else series["eye_tracking"],
        )
    blink = TimeSeries(name="likely_blink", data=eye.likely_blink.to_numpy(), timestamps=series["eye_tracking"],
                       unit="N/A", description="blinks")
    # Core EyeTracking requires an unnamed SpatialSeries child, which the named ellipse series do not count as
    # (pynwb's validator): the pupil centre again, as a plain SpatialSeries. AllenSDK reads the named series.
    pupil_position = SpatialSeries(
        name="pupil_position", data=eye[["pupil_center_x", "pupil_center_y"]].to_numpy(),
        timestamps=series["eye_tracking"], reference_frame="eye camera image", unit="pixels",
        description="centre of the pupil ellipse",
    )
    nwbfile.add_acquisition(classes.EllipseEyeTracking(**series, likely_blink=blink, spatial_series=[pupil_position]))
    rig = nwbfile.create_processing_module("eye_tracking_rig_metadata", "Eye tracking rig metadata module")
    units = {f"{key}__unit_of_measurement": "deg" if "rotation" in key else "mm" for key in EYE_TRACKING_RIG}
    rig.add(classes.OphysEyeTrackingRigMetadata(
        name="eye_tracking_rig_metadata", equipment=session.equipment_name, **EYE_TRACKING_RIG, **units
    ))


def behavior_session_uuid(seed: int, behavior_session_id: int) -> str:
    """A stable UUID per session (the MTrain foraging id of the real files)."""
    random_bytes = np.random.default_rng([seed, 9, behavior_session_id]).bytes(16)
    return str(uuid.UUID(bytes=random_bytes, version=4))
