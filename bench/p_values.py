"""How often responses come out significant, ours against brain_observatory_utilities 0.5.1: the fraction of cell x
event responses with p_value_gray_screen < 0.05, both on the same AllenSDK experiment (every ROI, keyed by
cell_roi_id, as tests/bou_peer.py does), with the README's call and with bou's default output_sampling_rate (None).
Runs in the AllenSDK venv; prints a line per experiment file and event type. Usage:

    .venv-allensdk/bin/python bench/p_values.py NWB [NWB ...]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bou_peer import REFERENCE_CALL, BehaviorOphysExperiment, bou, responses, roi_keyed_view  # noqa: E402

SIGNIFICANT_P = 0.05


def significant(dataset) -> float:
    return float((dataset.p_value_gray_screen < SIGNIFICANT_P).mean())


parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("nwb", nargs="+", type=Path, help="experiment NWB files (e.g. the demo's, after make run)")
for nwb in parser.parse_args().nwb:
    view = roi_keyed_view(BehaviorOphysExperiment.from_nwb_path(nwb))
    for event_type in ("changes", "omissions"):
        ours = responses.get_stimulus_response_xr(view, "dff", event_type, **REFERENCE_CALL)
        theirs = bou(view, "dff", event_type, **REFERENCE_CALL)
        default = bou(view, "dff", event_type, **dict(REFERENCE_CALL, output_sampling_rate=None))
        print(f"{Path(nwb).stem} {event_type}: p < {SIGNIFICANT_P} ours {significant(ours):.3f}, bou"
              f" {significant(theirs):.3f}; bou at output_sampling_rate None {significant(default):.3f}"
              f" (every p-value 0: {bool((default.p_value_gray_screen == 0).all())})", flush=True)
