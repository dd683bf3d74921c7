"""Rule demo_release: write the synthetic demo release (vb2p.demo.generate)."""

from vb2p.demo.design import DemoSize
from vb2p.demo.generate import generate_release
from vb2p.logs import log_to

log_to(snakemake.log[0])
demo = snakemake.params.demo
generate_release(
    demo["out"],
    seed=demo["seed"],
    size=DemoSize(
        mice=demo["mice"],
        duration_s=demo["duration_s"],
        cells_per_plane=demo["cells_per_plane"],
        all_traces=demo["all_traces"],
    ),
    manifest_version=demo["manifest_version"],
    workers=snakemake.threads,
)
