"""One content fingerprint for every cache of the library.

Every cache key (text-embedding cache, feature-store resume check, GeoCLIP gallery
embeddings, default-model checkpoint name, decoder tables) is a SHA-256 over the
*content* of its parts, never over ids, memory addresses or ``repr``: equal content
gives the same key in every run and on every machine, and any change of content,
type, shape or order gives another key.

Each part is written with a type tag and a length prefix, so ``("ab", "c")`` and
``("a", "bc")``, or the float ``1.0`` and the int ``1``, never collide.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["fingerprint", "module_fingerprint"]


def fingerprint(*parts: Any, length: int = 64) -> str:
    """SHA-256 hex digest of the content of ``parts``, cut to ``length`` characters.

    Parameters
    ----------
    *parts
        Strings, bytes, numbers, ``None``, paths (hashed as their text, not the file),
        numpy arrays and torch tensors (dtype, shape and values), PIL images (mode, size,
        pixels), and lists, tuples and mappings of these (a mapping's order does not
        matter: equal dicts give equal keys).
    length
        Hex characters to keep, 8 to 64.

    Returns
    -------
    str
        Lower-case hex.

    Raises
    ------
    ValueError
        For a part of another type, or an object array (their ``repr`` or bytes would
        not be stable across runs), or a ``length`` outside 8..64.

    Examples
    --------
    >>> fingerprint("encoder", ["x", "y"]) == fingerprint("encoder", ["x", "y"])
    True
    >>> fingerprint("encoder", ["xy"]) == fingerprint("encoder", ["x", "y"])
    False
    >>> len(fingerprint(np.zeros(3), length=24))
    24
    """
    if not 8 <= int(length) <= 64:
        raise ValueError(f"length must be in 8..64 hex characters; got {length}.")
    h = hashlib.sha256()
    for part in parts:
        _update(h, part)
    return h.hexdigest()[: int(length)]


def module_fingerprint(module: Any, length: int = 24) -> str:
    """Fingerprint of a ``torch.nn.Module``'s state (names, dtypes, shapes, values).

    Hashing tens of MB costs ~0.1 s, so the digest is memoised on the module and reused
    while no tensor was modified in place (torch bumps a tensor's version counter on
    every in-place write, which is how optimisers and ``load_state_dict`` update).

    Examples
    --------
    >>> lin = torch.nn.Linear(2, 2)
    >>> a = module_fingerprint(lin)
    >>> with torch.no_grad():
    ...     _ = lin.weight.add_(1.0)
    >>> module_fingerprint(lin) != a
    True
    """
    state = module.state_dict(keep_vars=True)
    stamp = (length, *((k, v.data_ptr(), v._version, tuple(v.shape), str(v.dtype))
                       for k, v in state.items()))
    memo = getattr(module, "_geodiffloc_fingerprint", None)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    digest = fingerprint({k: v.detach() for k, v in state.items()}, length=length)
    # kept on the module itself, so it can never be confused with another module's
    object.__setattr__(module, "_geodiffloc_fingerprint", (stamp, digest))
    return digest


def _chunk(h: Any, tag: bytes, payload: bytes) -> None:
    h.update(tag)
    h.update(len(payload).to_bytes(8, "little"))
    h.update(payload)


def _update(h: Any, part: Any) -> None:
    if part is None:
        _chunk(h, b"N", b"")
    elif isinstance(part, bool):  # before int: bool is an int subclass
        _chunk(h, b"?", b"1" if part else b"0")
    elif isinstance(part, int | np.integer):
        _chunk(h, b"i", str(int(part)).encode())
    elif isinstance(part, float | np.floating):
        value = float(part)
        _chunk(h, b"f", b"nan" if math.isnan(value) else struct.pack("<d", value))
    elif isinstance(part, str):
        _chunk(h, b"s", part.encode("utf-8"))
    elif isinstance(part, bytes | bytearray | memoryview):
        _chunk(h, b"b", bytes(part))
    elif isinstance(part, os.PathLike):
        _chunk(h, b"p", os.fsencode(part))
    elif isinstance(part, np.ndarray) and part.dtype != object:  # object: bytes are pointers
        arr = np.ascontiguousarray(part)
        _chunk(h, b"a", f"{arr.dtype.str}|{arr.shape}".encode())
        _chunk(h, b"v", arr.tobytes())
    elif _is_tensor(part):
        t = part.detach().to("cpu").contiguous()
        _chunk(h, b"t", f"{t.dtype}|{tuple(t.shape)}".encode())
        # bytes through uint8, which works for dtypes numpy lacks (bfloat16)
        _chunk(h, b"v", t.reshape(-1).view(_uint8()).numpy().tobytes() if t.numel() else b"")
    elif isinstance(part, Mapping):
        _chunk(h, b"d", str(len(part)).encode())
        for key in sorted(part, key=lambda k: fingerprint(k)):
            _update(h, key)
            _update(h, part[key])
    elif isinstance(part, list | tuple):
        _chunk(h, b"l", str(len(part)).encode())
        for item in part:
            _update(h, item)
    elif hasattr(part, "tobytes") and hasattr(part, "mode") and hasattr(part, "size"):
        _chunk(h, b"I", f"{part.mode}|{tuple(part.size)}".encode())  # PIL image
        _chunk(h, b"v", part.tobytes())
    else:
        raise ValueError(
            f"cannot fingerprint a {type(part).__module__}.{type(part).__qualname__}: only "
            "strings, bytes, numbers, None, paths, arrays, tensors, PIL images and "
            "lists/tuples/mappings of these have a content that is stable across runs. "
            "Pass the object's content (e.g. its file path or an array) instead."
        )


def _is_tensor(part: Any) -> bool:
    torch = _torch_if_loaded()
    return torch is not None and isinstance(part, torch.Tensor)


def _torch_if_loaded() -> Any:
    # A tensor can only exist once torch is imported; don't import it for other parts.
    import sys

    return sys.modules.get("torch")


def _uint8() -> Any:
    return _torch_if_loaded().uint8
