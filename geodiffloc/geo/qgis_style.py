"""QGIS layer style (``.qml``) for an exported field, so the raster opens with a colour ramp.

QGIS applies ``<name>.qml`` automatically when it loads ``<name>.tif`` from the same
folder. The style is a single-band pseudocolour ramp (matplotlib's ``magma`` sampled
at a few stops) over band 1, from 0 (transparent, so the basemap shows where there is
no probability) to the band's maximum.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .._io import atomic_path

__all__ = ["qml_style", "write_qml"]

_STOPS = 9  # colour-ramp stops: enough for a smooth ramp, few enough to edit by hand


def _hex(rgba: tuple[float, ...]) -> str:
    r, g, b = (round(float(c) * 255) for c in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def qml_style(band: np.ndarray, *, kind: str, units: str, cmap: str = "magma") -> str:
    """The text of a QGIS ``.qml`` style colouring ``band`` from its minimum to its maximum.

    Parameters
    ----------
    band
        The values of band 1 (NaN = nodata).
    kind, units
        The exported field kind and unit, shown in the style's labels.
    cmap
        A matplotlib colormap name.

    Returns
    -------
    str
        XML text of a single-band pseudocolour style.

    Examples
    --------
    >>> txt = qml_style(np.array([[0.0, 2.0]]), kind="density", units="km-2")
    >>> 'maximumValue="2"' in txt and 'type="singlebandpseudocolor"' in txt
    True
    """
    import matplotlib

    finite = np.asarray(band, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    lo = float(min(finite.min(), 0.0)) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    if hi <= lo:
        hi = lo + 1.0
    ramp = matplotlib.colormaps[cmap]
    root = ET.Element("qgis", version="3.28", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="singlebandpseudocolor", band="1",
                             opacity="1", alphaBand="-1", classificationMin=f"{lo:.9g}",
                             classificationMax=f"{hi:.9g}")
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader",
                           colorRampType="INTERPOLATED", classificationMode="1", clip="0",
                           minimumValue=f"{lo:.9g}", maximumValue=f"{hi:.9g}")
    for i, t in enumerate(np.linspace(0.0, 1.0, _STOPS)):
        value = lo + t * (hi - lo)
        ET.SubElement(shader, "item", value=f"{value:.9g}", color=_hex(ramp(float(t))),
                      alpha="0" if i == 0 else "255", label=f"{value:.3g} {units} ({kind})")
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0")
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(
        root, encoding="unicode") + "\n"


def write_qml(path: str | os.PathLike, band: np.ndarray, *, kind: str, units: str,
              overwrite: bool = True) -> Path:
    """Write :func:`qml_style` to ``path`` atomically; returns the path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(qml_style(band, kind=kind, units=units), encoding="utf-8")
    return Path(path)
