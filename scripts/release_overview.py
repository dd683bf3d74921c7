"""Rule release_overview: the tables that describe the whole release (vb2p.steps.overview)."""

from pathlib import Path

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.overview(snakemake.input.record, Path(snakemake.output.tables[0]).parent)
