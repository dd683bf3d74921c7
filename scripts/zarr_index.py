"""Rule zarr_index: the index of all stores and the cell-count cross-check (vb2p.index)."""

import logging
from pathlib import Path

from vb2p.index import build_index, cell_count_check, write_csv
from vb2p.logs import log_to
from vb2p.release import read_record, record_tables

log_to(snakemake.log[0])
index = build_index(snakemake.input.stores, Path(snakemake.output.index).parent)
write_csv(index, snakemake.output.index)
cells = record_tables(read_record(snakemake.input.record))["ophys_cells_table"]
mismatches = cell_count_check(index, cells)
write_csv(mismatches, snakemake.output.mismatches)
if len(mismatches):
    logging.getLogger("zarr_index").warning(
        "%d experiments have a valid-ROI count that differs from ophys_cells_table: see %s",
        len(mismatches), snakemake.output.mismatches,
    )
