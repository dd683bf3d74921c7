"""Rule download_experiment: one NWB file into the verified cache (vb2p.steps.download)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.download(snakemake.config, snakemake.input.record, int(snakemake.wildcards.ophys_experiment_id),
               snakemake.output.download)
