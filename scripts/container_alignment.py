"""Rule container_alignment: shifts against the reference session, and the figure (vb2p.steps.container_alignment)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.container_alignment(snakemake.input.stores, int(snakemake.wildcards.ophys_container_id),
                          snakemake.params.upsample, snakemake.output.table, snakemake.output.figure)
