"""Rule release_overview: the tables that describe the whole release (vb2p.overview)."""

from pathlib import Path

from vb2p.logs import log_to
from vb2p.overview import release_overview, write_overview
from vb2p.release import read_record, record_tables

log_to(snakemake.log[0])
tables = record_tables(read_record(snakemake.input.record))
write_overview(release_overview(tables), Path(snakemake.output.tables[0]).parent)
