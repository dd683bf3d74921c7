"""Rule session_task: the task tables of one session, from one of its experiments' NWB files (vb2p.steps.session_task)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.session_task(snakemake.config, snakemake.input.download, int(snakemake.params.ophys_experiment_id),
                   int(snakemake.wildcards.ophys_session_id), snakemake.output.task)
