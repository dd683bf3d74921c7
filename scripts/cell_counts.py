"""Rule cell_counts: cells per experiment, neurons and ROIs by depth, agreement of the stores (vb2p.steps.cell_counts)."""

from pathlib import Path

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.cell_counts(
    snakemake.input.record,
    snakemake.input.index,
    snakemake.params.depth_bin_um,
    {Path(path).stem: path for path in snakemake.output.tables},
    {Path(path).stem: path for path in snakemake.output.figures},
)
