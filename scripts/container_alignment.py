"""Rule container_alignment: shifts against the reference session, and the alignment figure."""

from vb2p.alignment import align_container, load_view
from vb2p.figures import plot_container_alignment, save_png
from vb2p.logs import log_to

log_to(snakemake.log[0])
views = [load_view(store) for store in snakemake.input.stores]  # acquisition order: the first is the reference
table, registered = align_container(views, snakemake.params.upsample)
table.to_csv(snakemake.output.table, index=False, lineterminator="\n")
container_id = int(snakemake.wildcards.ophys_container_id)
save_png(plot_container_alignment(container_id, views, table, registered), snakemake.output.figure)
