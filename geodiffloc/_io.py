"""Safe file writing shared by every writer in the library.

All files are written to a temporary sibling and renamed into place, so a crash
never leaves a half-written raster, table or checkpoint; an existing file is only
replaced when the caller asked for it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "check_writable"]


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Return ``path`` as a Path, refusing an existing file unless ``overwrite``.

    Raises
    ------
    FileExistsError
        If the file exists and ``overwrite`` is false (the message says how to replace it).
    FileNotFoundError
        If the parent folder does not exist.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it."
        )
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first.")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary file keeps the target's suffix so format-sniffing writers (GDAL,
    pyogrio) pick the right driver. On error the temporary file is removed and the
    target is untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    target = check_writable(path, overwrite)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=target.suffix + ".tmp" + target.suffix,
        dir=target.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers that refuse existing files (GDAL, pyogrio) create it themselves
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary file for {target}.")
        if target.exists() and not overwrite:  # appeared meanwhile: still never clobber
            raise FileExistsError(f"{target} appeared while writing; not replacing it.")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
