"""vb2p: the Visual Behavior 2P release as analysis-ready derived datasets.

The library behind the Snakemake workflow in this repository. Every step of the workflow is a function here,
callable from Python, from the `vb2p` command line, or from the thin rule scripts in `scripts/`.

For analysis, two names switch code written for AllenSDK and brain_observatory_utilities by one line:
`vb2p.open_experiment(store)` (AllenSDK's BehaviorOphysExperiment attributes, read from our store) and
`vb2p.get_stimulus_response_xr(experiment, ...)` (bou's function, same signature and values).
"""

__version__ = "0.1.0"

__all__ = ["open_experiment", "get_stimulus_response_xr"]


def __getattr__(name: str):
    # Imported on first use, so `import vb2p.responses` works where zarr is not installed (AllenSDK's venv).
    if name == "open_experiment":
        from vb2p.experiment import open_experiment

        return open_experiment
    if name == "get_stimulus_response_xr":
        from vb2p.responses import get_stimulus_response_xr

        return get_stimulus_response_xr
    raise AttributeError(f"module 'vb2p' has no attribute {name!r}")
