"""Rule sync_metadata: resolve the manifest and fetch the four metadata tables into the verified cache."""

from vb2p.logs import log_to
from vb2p.release import sync_metadata

log_to(snakemake.log[0])
sync_metadata(snakemake.params.config, snakemake.output.record)
