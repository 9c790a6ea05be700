"""Checks and small helpers shared by every function that takes a field DataArray."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sphere import FIELD_KINDS, LatLonGrid

#: attrs written by LatLonGrid.to_dataarray itself (not provenance)
GRID_ATTRS = ("units", "long_name", "field_kind", "grid_resolution_deg")


@dataclass(frozen=True)
class FieldParts:
    """A validated field: its grid, kind, values as ``(q, n_lat, n_lon)`` and leading dim."""

    grid: LatLonGrid
    kind: str
    values: np.ndarray
    leading_dim: str | None
    leading_coords: np.ndarray | None

    @property
    def n_queries(self) -> int:
        return int(self.values.shape[0])

    def query_labels(self) -> list[Any]:
        """One label per query: the leading coordinate values, or ``[0]`` for a 2-D field."""
        if self.leading_coords is None:
            return [0]
        return [v.item() if hasattr(v, "item") else v for v in self.leading_coords]


def field_parts(da: Any, *, dtype: Any = np.float64) -> FieldParts:
    """Validate a field DataArray against the grid contract and split it into parts.

    Raises
    ------
    ValueError
        Not a DataArray, wrong dims, unknown ``field_kind`` or an irregular grid.
    """
    import xarray as xr

    if not isinstance(da, xr.DataArray):
        raise ValueError(
            f"expected an xarray.DataArray field; got {type(da).__name__}. Build fields with "
            "LatLonGrid.to_dataarray(values, kind=...) or read them with read_geotiff(path)."
        )
    if da.ndim not in (2, 3) or tuple(da.dims[-2:]) != ("lat", "lon"):
        raise ValueError(
            f"a field must have dims ('lat', 'lon') or (leading, 'lat', 'lon'); got {da.dims}. "
            "Transpose it (da.transpose(..., 'lat', 'lon')) or build it with LatLonGrid."
        )
    kind = da.attrs.get("field_kind")
    if kind not in FIELD_KINDS:
        raise ValueError(
            f"attrs['field_kind'] must be one of {sorted(FIELD_KINDS)}; got {kind!r}. Set it "
            "(da.attrs['field_kind'] = 'mass') or build the field with LatLonGrid.to_dataarray."
        )
    grid = LatLonGrid.from_dataarray(da)
    values = np.asarray(da.values, dtype=dtype)
    lead = None
    coords = None
    if da.ndim == 3:
        lead = str(da.dims[0])
        coords = np.asarray(da[lead].values) if lead in da.coords else np.arange(da.shape[0])
    else:
        values = values[None]
    return FieldParts(grid, str(kind), values, lead, coords)


def provenance(attrs: dict[str, Any]) -> dict[str, Any]:
    """The provenance part of a field's attrs (everything the grid builder did not set)."""
    return {k: v for k, v in attrs.items() if k not in GRID_ATTRS}


def rewrap(da: Any, parts: FieldParts, values: np.ndarray, kind: str) -> Any:
    """Build a new field on the same grid, keeping leading coords, name and provenance."""
    vals = values if parts.leading_dim is not None else values[0]
    name = da.name if da.name not in (None, *FIELD_KINDS) else kind
    return parts.grid.to_dataarray(
        vals,
        kind=kind,  # type: ignore[arg-type]
        name=str(name),
        leading_dim=parts.leading_dim or "sample",
        leading_coords=parts.leading_coords,
        attrs=provenance(dict(da.attrs)),
    )


def masses(parts: FieldParts, what: str) -> np.ndarray:
    """Cell masses ``(q, n_lat, n_lon)`` of a probability field (NaN = nodata -> 0)."""
    area = parts.grid.cell_area_km2()[:, None]
    if parts.kind == "mass":
        m = parts.values
    elif parts.kind == "density":
        m = parts.values * area
    elif parts.kind == "log_density":
        m = np.exp(parts.values) * area
    else:
        raise ValueError(
            f"{what} needs a probability field, but this one holds '{parts.kind}' scores. Turn "
            "scores into probabilities first (e.g. a softmax over cells with a temperature) "
            "and build the field with kind='mass'."
        )
    return np.nan_to_num(m, nan=0.0, posinf=np.inf, neginf=0.0)
