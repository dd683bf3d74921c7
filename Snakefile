# Visual Behavior 2P release -> analysis-ready Zarr stores and figures. Stages live in workflow/rules/*.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/release.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/behavior.smk"
include: "workflow/rules/responses.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
        per_experiment_outputs,
