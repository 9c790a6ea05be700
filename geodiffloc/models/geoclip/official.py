"""Finding the official GeoCLIP release files (weights + MP16 100K gallery).

The ``geoclip`` package on PyPI ships them inside the wheel under ``geoclip/model/``;
a user can also copy them into any folder. We locate the package without importing it
(importing ``geoclip`` pulls in ``transformers``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["OFFICIAL_FILES", "find_official"]

#: Role -> file name of the official release files.
OFFICIAL_FILES: dict[str, str] = {
    "location_encoder": "location_encoder_weights.pth",
    "image_head": "image_encoder_mlp_weights.pth",
    "logit_scale": "logit_scale_weights.pth",
    "gallery": "coordinates_100K.csv",
}
_SUBDIRS = {"location_encoder": "weights", "image_head": "weights", "logit_scale": "weights",
            "gallery": "gps_gallery"}


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("geoclip")
    if spec is None:
        return None
    if not spec.submodule_search_locations:
        raise ValueError(
            f"'geoclip' resolves to {spec.origin}, which is not the geoclip package (a file "
            "of that name shadows it on sys.path); rename it or pass path=<weights folder>."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def find_official(path: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the official weight files and gallery CSV.

    Parameters
    ----------
    path
        A folder holding the files, either flat or in the package layout
        (``weights/*.pth``, ``gps_gallery/coordinates_100K.csv``). ``None`` looks inside
        an installed ``geoclip`` package.

    Returns
    -------
    dict
        Role (``"location_encoder"``, ``"image_head"``, ``"logit_scale"``, ``"gallery"``)
        -> path. The gallery entry is absent when only weights were found.

    Raises
    ------
    ValueError
        No folder given and ``geoclip`` not installed, or weight files missing; the
        message lists what was looked for and how to get it.

    Examples
    --------
    >>> sorted(find_official())  # doctest: +SKIP
    ['gallery', 'image_head', 'location_encoder', 'logit_scale']
    """
    if path is None:
        root = _package_dir()
        if root is None:
            raise ValueError(
                "the official GeoCLIP weights were not found: the 'geoclip' package is not "
                "installed. pip install geoclip (it ships the weights and the MP16 gallery), "
                "or pass GeoCLIP.from_official(path=<folder with "
                f"{', '.join(OFFICIAL_FILES.values())}>)."
            )
    else:
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"{os.fspath(path)!r} is not a folder with GeoCLIP weight files.")
    found: dict[str, Path] = {}
    for role, fname in OFFICIAL_FILES.items():
        for cand in (root / fname, root / _SUBDIRS[role] / fname):
            if cand.is_file():
                found[role] = cand
                break
    missing = [OFFICIAL_FILES[r] for r in ("location_encoder", "image_head", "logit_scale")
               if r not in found]
    if missing:
        raise ValueError(
            f"GeoCLIP weight files missing in {root}: {missing}. Expected them in the folder "
            "itself or in its 'weights/' subfolder (the layout of the geoclip package)."
        )
    return found
