"""vb2p: the Visual Behavior 2P release as analysis-ready derived datasets.

The library behind the Snakemake workflow in this repository. Every step of the workflow is a function here,
callable from Python, from the `vb2p` command line, or from the thin rule scripts in `scripts/`.
"""

__version__ = "0.1.0"
