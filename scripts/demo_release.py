"""Rule demo_release: write the synthetic demo release (vb2p.steps.demo_release)."""

from vb2p import steps
from vb2p.logs import log_to

log_to(snakemake.log[0])
steps.demo_release(snakemake.params.demo, workers=snakemake.threads)
