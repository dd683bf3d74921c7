"""Rule sync_metadata: resolve the manifest, fetch the metadata tables into the cache (vb2p.steps.sync)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.sync(snakemake.config, snakemake.output.record)
