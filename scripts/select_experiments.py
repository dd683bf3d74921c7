"""Checkpoint select_experiments: the experiments the rest of the workflow processes (vb2p.steps.select)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.select(snakemake.params.selection, snakemake.config["download"]["max_selection_gb"], snakemake.input.record,
             snakemake.output.experiments)
