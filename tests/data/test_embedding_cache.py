"""The on-disk embedding cache shared by the text task, benchmarks and tutorials."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geodiffloc.data.cache import cached_encode, default_cache_dir, embedding_cache_key


class Counting:
    modality = "text"

    def __init__(self, name="count", dim=2, bad_shape=False) -> None:
        self.name, self.dim, self.calls, self.bad_shape = name, dim, 0, bad_shape

    def encode(self, xs, **kw):
        self.calls += 1
        out = torch.tensor([[float(len(x)), float(x.count("a"))] for x in xs])
        return out[:, :1] if self.bad_shape else out


def test_key_depends_on_boundaries_order_and_name() -> None:
    k = embedding_cache_key("e", ["ab", "c"])
    assert k != embedding_cache_key("e", ["a", "bc"])
    assert k != embedding_cache_key("e", ["c", "ab"])
    assert k != embedding_cache_key("f", ["ab", "c"])
    assert k == embedding_cache_key("e", ("ab", "c"))


def test_hit_miss_disable_and_env(tmp_path, monkeypatch) -> None:
    enc = Counting()
    a = cached_encode(enc, ["aa", "b"], cache_dir=tmp_path)
    b = cached_encode(enc, ["aa", "b"], cache_dir=tmp_path)
    assert enc.calls == 1
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, torch.tensor([[2.0, 2.0], [1.0, 0.0]]))
    cached_encode(enc, ["aa", "b"], cache_dir=False)
    assert enc.calls == 2
    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    cached_encode(enc, ["x"])
    assert len(list((tmp_path / "env" / "embeddings").glob("*.npy"))) == 1


def test_stale_entry_of_wrong_shape_is_recomputed(tmp_path) -> None:
    enc = Counting()
    cached_encode(enc, ["aa"], cache_dir=tmp_path)
    (entry,) = (tmp_path / "embeddings").glob("*.npy")
    np.save(entry, np.zeros((5, 7), np.float32))
    out = cached_encode(enc, ["aa"], cache_dir=tmp_path)
    assert enc.calls == 2 and out.tolist() == [[2.0, 2.0]]
    assert np.load(entry).shape == (1, 2)


def test_wrong_encoder_output_shape(tmp_path) -> None:
    with pytest.raises(ValueError, match="expected"):
        cached_encode(Counting(bad_shape=True), ["a"], cache_dir=tmp_path)
