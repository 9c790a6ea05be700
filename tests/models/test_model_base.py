"""The shared model base: checkpoint I/O (new and older files), GeoDataFrames, the interface."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from geodiffloc import GeoCLIP, LocDiff
from geodiffloc.models.base import (
    CheckpointNotFoundError,
    Geolocator,
    points_frame,
    read_checkpoint,
    write_checkpoint,
)


class Const(nn.Module, Geolocator):
    """A toy model: always answers its learned latitude."""

    checkpoint_format, model_name = "test.const/1", "Const"

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.width = width
        self.w = nn.Parameter(torch.arange(float(width)))

    def predict(self, inputs, **kw):
        n = len(inputs)
        return points_frame(np.full(n, float(self.w[0].detach())), np.zeros(n))

    def probability_map(self, inputs, **kw):
        raise NotImplementedError

    def checkpoint_config(self):
        return {"width": self.width}

    @classmethod
    def from_checkpoint_config(cls, cfg, **kw):
        return cls(cfg["width"])


def test_round_trip_through_the_base(tmp_path):
    m = Const(4)
    with torch.no_grad():
        m.w.add_(10.0)
    path = m.save(tmp_path / "c.safetensors")
    back = Const.load(path)
    assert back.width == 4 and not back.training
    torch.testing.assert_close(back.w, m.w)
    assert back.predict([0, 1])["lat"].tolist() == [10.0, 10.0]
    with pytest.raises(FileExistsError):
        m.save(path)
    m.save(path, overwrite=True)


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as e:
        Const.load(tmp_path / "missing.safetensors")
    # one error type that both older contracts catch (LocDiff: FileNotFoundError, GeoCLIP:
    # ValueError)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        Const.load(junk)
    other = LocDiff(L=2, cond_dim=4, widths=(8,)).save(tmp_path / "ld.safetensors")
    with pytest.raises(ValueError, match=r"not a geodiffloc Const checkpoint.*locdiff"):
        Const.load(other)
    with pytest.raises(ValueError, match="not a geodiffloc GeoCLIP checkpoint"):
        GeoCLIP.load(other)
    bad = write_checkpoint(tmp_path / "bad.safetensors", {"w": torch.zeros(5)},
                           fmt=Const.checkpoint_format, config={"width": 3})
    with pytest.raises(ValueError, match=r"do not fit.*w: file \(5,\) vs model \(3,\)"):
        Const.load(bad)


def test_files_written_before_the_base_still_load(tmp_path):
    # LocDiff used to keep its format tag only inside the JSON config
    ld = LocDiff(L=2, cond_dim=4, widths=(8,))
    old = tmp_path / "old-locdiff.safetensors"
    save_file({k: v.contiguous() for k, v in ld.net.state_dict().items()}, str(old),
              metadata={"config": json.dumps(ld.config())})
    back = LocDiff.load(old)
    for k, v in ld.net.state_dict().items():
        torch.testing.assert_close(back.net.state_dict()[k], v)
    # GeoCLIP wrote format + format_version + config
    gc = GeoCLIP(backbone_dim=6, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4, seed=0,
                 cache_dir=False)
    old_gc = tmp_path / "old-geoclip.safetensors"
    save_file({k: v.contiguous() for k, v in gc.state_dict().items()}, str(old_gc),
              metadata={"format": "geodiffloc.geoclip", "format_version": "1",
                        "config": json.dumps(gc.config)})
    back_gc = GeoCLIP.load(old_gc, cache_dir=False)
    x = torch.randn(3, 6)
    torch.testing.assert_close(back_gc.project(x), gc.project(x))


def test_read_checkpoint_returns_tensors_and_config(tmp_path):
    p = write_checkpoint(tmp_path / "x.safetensors", {"a": torch.ones(2, 3)}, fmt="f/1",
                         config={"k": [1, 2]})
    tensors, cfg = read_checkpoint(p, fmt="f/1", what="x")
    assert tensors["a"].shape == (2, 3) and cfg == {"k": [1, 2]}


def test_a_family_must_implement_the_interface():
    class Half(nn.Module, Geolocator):
        checkpoint_format, model_name = "h/1", "Half"

        def predict(self, inputs, **kw):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_points_frame_is_epsg4326_with_matching_geometry():
    gdf = points_frame([10.0, -45.5], [170.0, -3.0], {"score": [1, 2]},
                       leading={"query": [0, 1]}, attrs={"model": "m"})
    assert list(gdf.columns) == ["query", "lat", "lon", "score", "geometry"]
    assert gdf.crs.to_epsg() == 4326 and gdf.attrs == {"model": "m"}
    np.testing.assert_array_equal(gdf.geometry.x, [170.0, -3.0])
    np.testing.assert_array_equal(gdf.geometry.y, [10.0, -45.5])


def test_both_families_are_geolocators():
    assert issubclass(LocDiff, Geolocator) and issubclass(GeoCLIP, Geolocator)
