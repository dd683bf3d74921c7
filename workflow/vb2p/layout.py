"""Facts about how the real Visual Behavior 2P release is laid out (docs: allen-release-layout.md).

Everything that reads or writes the release names its paths through this module, so the demo generator and the
readers cannot drift apart.
"""

from __future__ import annotations

PROJECT_NAME = "visual-behavior-ophys"
BUCKET = "visual-behavior-ophys-data"
REGION = "us-west-2"
RELEASE_PREFIX = PROJECT_NAME  # every file sits under s3://<bucket>/<prefix>/
DEFAULT_RELEASE_URL = f"s3://{BUCKET}/{RELEASE_PREFIX}"
URL_HOST_TEMPLATE = "{bucket}.s3.{region}.amazonaws.com"

MANIFEST_DIR = "manifests"
MANIFEST_NAME_TEMPLATE = PROJECT_NAME + "_project_manifest_v{version}.json"
METADATA_DIR = "project_metadata"
EXPERIMENT_DIR = "behavior_ophys_experiments"
BEHAVIOR_SESSION_DIR = "behavior_sessions"

METADATA_TABLES = (
    "behavior_session_table",
    "ophys_session_table",
    "ophys_experiment_table",
    "ophys_cells_table",
)
TABLE_INDEX = {
    "behavior_session_table": "behavior_session_id",
    "ophys_session_table": "ophys_session_id",
    "ophys_experiment_table": "ophys_experiment_id",
    "ophys_cells_table": "cell_roi_id",
}
MANIFEST_KEYS = (
    "project_name",
    "manifest_version",
    "metadata_file_id_column_name",
    "data_pipeline",
    "metadata_files",
    "data_files",
)
FILE_ENTRY_KEYS = ("url", "version_id", "file_hash")

# AllenSDK's cache layout (layout document section 3).
CACHE_LAST_USED = "_manifest_last_used.txt"
CACHE_DOWNLOADED = "_downloaded_data.json"

# HDF5 paths inside behavior_ophys_experiment_<id>.nwb (layout document section 5).
NWB_DFF = "/processing/ophys/dff/traces/data"
NWB_TIMESTAMPS = "/processing/ophys/dff/traces/timestamps"
NWB_DFF_ROIS = "/processing/ophys/dff/traces/rois"
NWB_CELL_TABLE = "/processing/ophys/image_segmentation/cell_specimen_table"
NWB_MAX_PROJECTION = "/processing/ophys/images/max_projection"
NWB_AVERAGE_IMAGE = "/processing/ophys/images/average_image"
# The rest of AllenSDK's cell_specimen_table, stored as they are (int64 for the plane, float64 for the corrections).
NWB_CELL_TABLE_EXTRAS = ("mask_image_plane", "max_correction_down", "max_correction_left", "max_correction_right",
                         "max_correction_up")
NWB_METADATA = "/general/metadata"
NWB_IMAGING_PLANE = "/general/optophysiology/imaging_plane_1"
NWB_SUBJECT = "/general/subject"
UNMATCHED_CELL_SPECIMEN_ID = -1  # written by Allen for cells not matched across sessions

MESOSCOPE_RIGS = ("MESO.1",)

# What kind of value each known experiment-table column holds (layout document section 4), so a selection filter is
# checked before any work; columns not listed here (a later release may add some) are checked against the table.
EXPERIMENT_COLUMN_KINDS = {
    **dict.fromkeys(
        ("ophys_experiment_id", "behavior_session_id", "ophys_session_id", "ophys_container_id", "isi_experiment_id",
         "file_id"),
        "id",
    ),
    **dict.fromkeys(
        ("age_in_days", "imaging_depth", "targeted_imaging_depth", "imaging_plane_group", "session_number",
         "prior_exposures_to_session_type", "prior_exposures_to_image_set", "prior_exposures_to_omissions"),
        "number",
    ),
    **dict.fromkeys(
        ("mouse_id", "indicator", "full_genotype", "cre_line", "reporter_line", "sex", "targeted_structure",
         "project_code", "session_type", "image_set", "behavior_type", "experience_level", "equipment_name",
         "published_at"),
        "text",
    ),
    "passive": "bool",
    "driver_line": "list",
    "date_of_acquisition": "date",
}
# Typical experiment file sizes by rig (section 6), for estimating what a selection will download.
TYPICAL_EXPERIMENT_FILE_BYTES = {"scientifica": 0.95e9, "mesoscope": 0.27e9}


def metadata_key(table: str) -> str:
    """Key of a metadata table relative to the release prefix."""
    return f"{METADATA_DIR}/{table}.csv"


def experiment_key(ophys_experiment_id: int) -> str:
    return f"{EXPERIMENT_DIR}/behavior_ophys_experiment_{int(ophys_experiment_id)}.nwb"


def behavior_session_key(behavior_session_id: int) -> str:
    return f"{BEHAVIOR_SESSION_DIR}/behavior_session_{int(behavior_session_id)}.nwb"


def manifest_key(version: str) -> str:
    return f"{MANIFEST_DIR}/{MANIFEST_NAME_TEMPLATE.format(version=version)}"


def public_url(key: str, bucket: str = BUCKET, region: str = REGION, prefix: str = RELEASE_PREFIX) -> str:
    """The https URL a manifest uses for a key under the release prefix."""
    host = URL_HOST_TEMPLATE.format(bucket=bucket, region=region)
    return f"https://{host}/{prefix}/{key}"
