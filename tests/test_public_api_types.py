"""The public API is typed: no function exported in ``__all__`` returns ``Any``."""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

PUBLIC = ["geodiffloc", "geodiffloc.geo", "geodiffloc.data", "geodiffloc.train",
          "geodiffloc.pipeline", "geodiffloc.metrics", "geodiffloc.shdd", "geodiffloc.sphere",
          "geodiffloc.encoders", "geodiffloc.harmonics", "geodiffloc.models.hierloc",
          "geodiffloc.models.geoclip", "geodiffloc.models.locdiff", "geodiffloc.models.g3"]


@pytest.mark.parametrize("module", PUBLIC)
def test_public_functions_say_what_they_return(module: str) -> None:
    mod = importlib.import_module(module)
    untyped = []
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name, None)
        if inspect.isfunction(obj):
            ret = inspect.signature(obj).return_annotation
            if ret in ("Any", typing.Any) or ret is inspect.Signature.empty:
                untyped.append(name)
    assert untyped == [], f"{module}: {untyped} return Any or nothing declared"
