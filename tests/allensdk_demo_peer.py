"""Runs inside the AllenSDK 2.16.2 venv (.venv-allensdk), never in ours: what AllenSDK's own reader returns for demo
experiment files.

    python allensdk_demo_peer.py FILE...     one JSON object on the last line: {experiment_id: what AllenSDK read}

For each file: BehaviorOphysExperiment.from_nwb_path (default arguments), then the tables a response analysis uses,
as plain JSON (NaN -> null, inf -> "inf").
"""

import json
import math
import sys
import warnings
from pathlib import Path

warnings.simplefilter("ignore")

from allensdk.brain_observatory.behavior.behavior_ophys_experiment import BehaviorOphysExperiment  # noqa: E402

PRESENTATION_COLUMNS = (
    "stimulus_block", "stimulus_block_name", "image_name", "start_time", "end_time", "start_frame", "is_change",
    "is_sham_change", "omitted", "is_image_novel", "trials_id", "active",
)
TRIAL_COLUMNS = (
    "start_time", "stop_time", "go", "catch", "aborted", "auto_rewarded", "hit", "miss", "false_alarm",
    "correct_reject", "change_time", "change_frame", "response_time", "reward_time", "initial_image_name",
    "change_image_name",
)


def plain(value):
    """A JSON-safe Python value."""
    if hasattr(value, "item"):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    try:
        if value != value:  # pd.NA
            return None
    except TypeError:
        return None
    return value


def columns(table, names):
    return {name: [plain(v) for v in table[name].tolist()] for name in names}


def describe(path: Path) -> dict:
    experiment = BehaviorOphysExperiment.from_nwb_path(str(path))
    presentations = experiment.stimulus_presentations
    trials = experiment.trials
    return {
        "presentations": {"index": presentations.index.tolist(), **columns(presentations, PRESENTATION_COLUMNS)},
        "trials": {"index": trials.index.tolist(), "n_licks": [len(v) for v in trials.lick_times],
                   **columns(trials, TRIAL_COLUMNS)},
        "licks": columns(experiment.licks, ("timestamps", "frame")),
        "rewards": columns(experiment.rewards, ("timestamps", "volume", "auto_rewarded")),
        "n_stimulus_timestamps": len(experiment.stimulus_timestamps),
        "n_running_speed": len(experiment.running_speed),
        "n_eye_tracking": len(experiment.eye_tracking),
        "stimulus_templates": sorted(experiment.stimulus_templates.index.tolist()),
        "task_parameters": {k: plain(v) if not isinstance(v, list) else v
                            for k, v in experiment.task_parameters.items() if k != "stimulus"},
        "events_shape": [len(experiment.events), len(experiment.events.events.iloc[0])],
        "dff_shape": [len(experiment.dff_traces), len(experiment.dff_traces.dff.iloc[0])],
        "n_ophys_timestamps": len(experiment.ophys_timestamps),
        "cell_roi_id": experiment.cell_specimen_table.cell_roi_id.tolist(),
        "session_type": experiment.metadata["session_type"],
    }


if __name__ == "__main__":
    result = {Path(p).stem.rsplit("_", 1)[1]: describe(Path(p)) for p in sys.argv[1:]}
    print(json.dumps(result))
