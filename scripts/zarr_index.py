"""Rule zarr_index: the index of all stores and the cell-count cross-check (vb2p.steps.build_index)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.build_index(snakemake.input.stores, snakemake.input.record, snakemake.output.index, snakemake.output.mismatches,
                  snakemake.output.transfers)
