"""Decoding untrusted image files with a size limit (decompression bombs refused).

Pillow only *warns* between ``Image.MAX_IMAGE_PIXELS`` (~89 megapixels) and twice that,
and raises its own error type above; a tiny crafted file can declare a gigapixel image
and take all memory when decoded. :func:`refuse_bombs` turns both into a ``ValueError``
that names the file and the limit.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["refuse_bombs"]


@contextlib.contextmanager
def refuse_bombs(path: Any) -> Iterator[None]:
    """Around ``Image.open`` / decoding: an image above Pillow's pixel limit is a ValueError.

    Raise ``PIL.Image.MAX_IMAGE_PIXELS`` for legitimately huge photos.
    """
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ValueError(
                f"image {os.fspath(path) if isinstance(path, os.PathLike) else path!r} declares "
                f"more pixels than the safe limit ({err}); refusing to decode it. If it is a "
                "genuine photo, raise PIL.Image.MAX_IMAGE_PIXELS first."
            ) from None
