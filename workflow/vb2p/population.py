"""Session population dF/F: the mean over the valid cells of each imaging plane, over a time window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from vb2p.errors import ConfigError


def plane_mean_dff(store: str | Path, window: tuple[float, float]) -> pd.DataFrame:
    """time, mean_dff of one plane within [start, end] seconds, with the plane's labels."""
    ds = xr.open_zarr(str(store))
    inside = ds.dff.sel(time=slice(*window))
    if inside.sizes["time"] == 0:
        raise ConfigError(
            f"figures.session_window_s {list(window)}: experiment {ds.attrs['ophys_experiment_id']} has no frames in "
            f"it (its frames span {float(ds.time[0]):.0f}-{float(ds.time[-1]):.0f} s); choose a window inside the "
            "session"
        )
    valid = ds.valid_roi.values
    mean = inside.isel(cell=np.flatnonzero(valid)).mean("cell").values.astype(np.float64)
    return pd.DataFrame(
        {
            "ophys_experiment_id": int(ds.attrs["ophys_experiment_id"]),
            "targeted_structure": ds.attrs["targeted_structure"],
            "imaging_depth": int(ds.attrs["imaging_depth"]),
            "n_cells": int(valid.sum()),
            "time": inside.time.values,
            "mean_dff": mean,
        }
    )


def session_population(stores: list[str | Path], window: tuple[float, float]) -> pd.DataFrame:
    return pd.concat([plane_mean_dff(store, window) for store in stores], ignore_index=True)
