"""Rule extract_experiment: NWB -> Zarr store of one experiment (vb2p.steps.extract)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.extract(snakemake.config, snakemake.input.download, int(snakemake.wildcards.ophys_experiment_id),
              snakemake.output.store, snakemake.input.session_task or None)  # none: the session's only selected plane
