"""Rule download_experiment: one NWB file into the verified cache (version-pinned, hash-checked, resumable)."""

from vb2p.logs import log_to
from vb2p.release import download_experiment, read_record

log_to(snakemake.log[0])
download_experiment(
    snakemake.params.config,
    read_record(snakemake.input.record),
    int(snakemake.wildcards.ophys_experiment_id),
    snakemake.output.download,
)
