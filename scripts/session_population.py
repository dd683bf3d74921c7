"""Rule session_population: mean dF/F of every imaging plane of a session over the window."""

from vb2p.figures import plot_session_population, save_png
from vb2p.logs import log_to
from vb2p.population import session_population

log_to(snakemake.log[0])
window = tuple(snakemake.params.window)
traces = session_population(snakemake.input.stores, window)
traces.to_csv(snakemake.output.table, index=False, lineterminator="\n")
save_png(plot_session_population(int(snakemake.wildcards.ophys_session_id), traces, window), snakemake.output.figure)
