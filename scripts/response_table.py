"""Rule response_table: the release-wide table of cell responses (vb2p.steps.response_table)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.response_table(snakemake.input.stores, snakemake.output.table)
