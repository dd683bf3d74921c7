"""Rule extract_experiment: NWB -> Zarr store of one experiment (vb2p.extract)."""

import json
import logging

from vb2p.extract import ExtractionOptions, extract_experiment
from vb2p.logs import log_to

log_to(snakemake.log[0])
download = json.loads(open(snakemake.input.download).read())
summary = extract_experiment(
    download["path"],
    snakemake.output.store,
    int(snakemake.wildcards.ophys_experiment_id),
    provenance={k: download[k] for k in ("url", "version_id", "file_hash", "manifest_version")},
    options=ExtractionOptions(**snakemake.params.extraction),
)
logging.getLogger("extract_experiment").info(
    "%d frames x %d ROIs (%d valid) -> %s", summary["n_frames"], summary["n_rois"], summary["n_valid_rois"],
    snakemake.output.store,
)
