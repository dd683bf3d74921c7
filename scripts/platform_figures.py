"""Rule platform_figures: population responses and responsive fractions (vb2p.steps.platform_figures)."""

from pathlib import Path

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.platform_figures(
    snakemake.input.table,
    snakemake.params.platform,
    {Path(path).stem: path for path in snakemake.output.tables},
    {Path(path).stem: path for path in snakemake.output.figures},
)
