"""Rule session_population: mean dF/F of every imaging plane of a session over the window (vb2p.steps.population)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.population(snakemake.input.stores, int(snakemake.wildcards.ophys_session_id), tuple(snakemake.params.window),
                 snakemake.output.table, snakemake.output.figure)
