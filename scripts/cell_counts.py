"""Rule cell_counts: cells per experiment by depth, cre line and structure; agreement of the selected stores."""

import pandas as pd

from vb2p import cell_counts, figures
from vb2p.logs import log_to
from vb2p.release import read_record, record_tables

log_to(snakemake.log[0])
tables = record_tables(read_record(snakemake.input.record))
by_experiment = cell_counts.cells_by_experiment(tables["ophys_experiment_table"], tables["ophys_cells_table"])
outputs = {
    "by_experiment": by_experiment,
    "by_depth": cell_counts.counts_by_depth(by_experiment, snakemake.params.depth_bin_um),
    "summary": cell_counts.summary(by_experiment),
    "selected": cell_counts.selected_agreement(pd.read_csv(snakemake.input.index), by_experiment),
}
for path in snakemake.output.tables:
    outputs[path.rsplit("/", 1)[1].removesuffix(".csv")].to_csv(path, index=False, lineterminator="\n")
plots = {
    "histogram": figures.plot_cells_per_experiment_histogram(by_experiment),
    "vs_depth": figures.plot_cells_vs_depth(by_experiment),
    "by_cre_line": figures.plot_cells_by_cre_line(by_experiment),
    "by_depth_bin": figures.plot_counts_by_depth(outputs["by_depth"]),
}
for path in snakemake.output.figures:
    figures.save_png(plots[path.rsplit("/", 1)[1].removesuffix(".png")], path)
