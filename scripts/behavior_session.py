"""Rule behavior_session: a session's behavior performance and figure (vb2p.steps.behavior_session)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.behavior_session(snakemake.input.stores, int(snakemake.wildcards.ophys_session_id), snakemake.output.table,
                       snakemake.output.figure)
