"""Checkpoint select_experiments: the experiments the rest of the workflow processes (vb2p.selection)."""

import logging

from vb2p.logs import log_to
from vb2p.release import read_record, record_tables
from vb2p.selection import select_experiments, write_selection

log_to(snakemake.log[0])
selection = snakemake.params.selection
experiments = record_tables(read_record(snakemake.input.record))["ophys_experiment_table"]
selected = select_experiments(experiments, **selection)
write_selection(selected, snakemake.output.experiments)
logging.getLogger("select_experiments").info(
    "selected %d experiments in %d containers", len(selected), selected.ophys_container_id.nunique()
)
