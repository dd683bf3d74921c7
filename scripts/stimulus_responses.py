"""Rule stimulus_responses: one experiment's stimulus-locked responses (vb2p.steps.responses)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.responses(snakemake.input.store, snakemake.params.metadata, snakemake.params.responses,
                snakemake.output.responses)
