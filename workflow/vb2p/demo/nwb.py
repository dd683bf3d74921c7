"""Write demo NWB files with pynwb at the HDF5 paths and dtypes of the released files (layout document section 5)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pynwb
from hdmf.common import ElementIdentifiers, VectorData
from pynwb.base import Images
from pynwb.image import GrayscaleImage
from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel, PlaneSegmentation

NDX_NAMESPACE = "ndx-aibs-behavior-ophys"
NDX_DIR = Path(__file__).resolve().parents[1] / "ndx"
IMAGE_RESOLUTION = 7.8125e-05  # the value the released files give for GrayscaleImage.resolution
STIMULUS_FRAME_RATE = 60.0


@cache
def extension_classes() -> tuple[type, type, type]:
    """BehaviorSubject, BehaviorMetadata and OphysBehaviorMetadata, generated from our copy of the namespace."""
    pynwb.load_namespaces(str(NDX_DIR / f"{NDX_NAMESPACE}.namespace.yaml"))
    return tuple(pynwb.get_class(name, NDX_NAMESPACE) for name in ("BehaviorSubject", "BehaviorMetadata", "OphysBehaviorMetadata"))


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
    cell_roi_id: np.ndarray  # (n_rois,) int64
    cell_specimen_id: np.ndarray  # (n_rois,) int64, -1 unmatched
    valid_roi: np.ndarray  # (n_rois,) bool
    image_mask: np.ndarray  # (n_rois, H, W) bool
    bounding_boxes: np.ndarray  # (n_rois, 4) int64: x, y, width, height
    max_projection: np.ndarray  # (H, W) uint8
    average_image: np.ndarray  # (H, W) uint8
    all_traces: bool = False


def _subject(info: SubjectInfo):
    behavior_subject, _, _ = extension_classes()
    return behavior_subject(
        subject_id=info.mouse_id,
        genotype=info.full_genotype,
        sex=info.sex,
        age=f"P{info.age_in_days}D",
        species="Mus musculus",
        description="A visual behavior subject with a LabTracks ID",
        driver_line=list(info.driver_line),
        reporter_line=info.reporter_line,
    )


def _nwbfile(identifier: str, session: SessionInfo, subject: SubjectInfo, description: str) -> pynwb.NWBFile:
    return pynwb.NWBFile(
        session_description=description,
        identifier=identifier,
        session_start_time=session.date_of_acquisition,
        file_create_date=session.date_of_acquisition,
        institution="Allen Institute for Brain Science",
        keywords=["visual", "behavior", "task"],
        experiment_description="Synthetic demo release in the layout of the Visual Behavior 2P release",
        subject=_subject(subject),
    )


def _write(nwbfile: pynwb.NWBFile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
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
        "stimulus_frame_rate": STIMULUS_FRAME_RATE,
    }


def write_behavior_session(path: Path, session: SessionInfo, subject: SubjectInfo) -> None:
    """A behavior-only session file (training, habituation): metadata only in the demo."""
    _, behavior_metadata, _ = extension_classes()
    nwbfile = _nwbfile(str(session.behavior_session_id), session, subject, "Behavior session")
    nwbfile.add_lab_meta_data(behavior_metadata(**_behavior_metadata(session)))
    _write(nwbfile, path)


def write_experiment(path: Path, session: SessionInfo, subject: SubjectInfo, plane: PlaneInfo, data: PlaneData) -> None:
    """One behavior_ophys_experiment_<id>.nwb file."""
    _, _, ophys_metadata = extension_classes()
    height, width = data.max_projection.shape
    nwbfile = _nwbfile(str(plane.ophys_experiment_id), session, subject, "Ophys session")
    nwbfile.add_lab_meta_data(
        ophys_metadata(
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
    rois = table.create_roi_table_region(
        description="segmented cells labeled by cell_specimen_id", region=list(range(n_rois))
    )
    # Containers join the file before their series, so every DynamicTableRegion shares an ancestor with its table.
    dff = DfOverF(name="dff")
    ophys.add(dff)
    dff.create_roi_response_series(name="traces", data=data.dff, rois=rois, unit="NA", timestamps=data.timestamps)
    if data.all_traces:
        _add_fluorescence_traces(ophys, table, data)
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
    _write(nwbfile, path)


def _add_fluorescence_traces(ophys, table, data: PlaneData) -> None:
    """The other (n_frames, n_rois) float64 matrices of the released files; they make up most of a file's size."""
    baseline = 200.0 + 20.0 * np.arange(data.dff.shape[1])
    corrected = baseline * (1.0 + data.dff)
    neuropil = 0.7 * baseline + 5.0 * np.sin(data.timestamps / 30.0)[:, None]
    for name, values in (
        ("corrected_fluorescence", corrected),
        ("demixed_trace", corrected + 0.7 * neuropil),
        ("neuropil_trace", neuropil),
    ):
        rois = table.create_roi_table_region(description="segmented cells", region=list(range(data.dff.shape[1])))
        fluorescence = Fluorescence(name=name)
        ophys.add(fluorescence)
        fluorescence.create_roi_response_series(
            name="traces", data=values, rois=rois, unit="NA", timestamps=data.timestamps
        )


def behavior_session_uuid(seed: int, behavior_session_id: int) -> str:
    """A stable UUID per session (the MTrain foraging id of the real files)."""
    random_bytes = np.random.default_rng([seed, 9, behavior_session_id]).bytes(16)
    return str(uuid.UUID(bytes=random_bytes, version=4))


def validate(path: Path) -> list[str]:
    """pynwb's validator against the namespaces cached in the file; returns its error messages."""
    return [str(error) for error in pynwb.validate(path=str(path), use_cached_namespaces=True)]
