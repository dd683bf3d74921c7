"""Rule behavior_performance: one row per session (vb2p.steps.behavior_performance)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.behavior_performance(snakemake.input.tables, snakemake.output.table)
