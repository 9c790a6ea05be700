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


def test_entry_is_validated_by_size_and_hash_before_use(tmp_path, caplog) -> None:
    """Flipped bits that keep the shape and finiteness are caught by the SHA-256."""
    import json

    enc = Counting()
    cached_encode(enc, ["aa", "bbb"], cache_dir=tmp_path)
    (entry,) = (tmp_path / "embeddings").glob("*.npy")
    manifest = json.loads(entry.with_suffix(".json").read_text())
    assert manifest["size"] == entry.stat().st_size and len(manifest["sha256"]) == 64
    raw = bytearray(entry.read_bytes())
    raw[-1] ^= 0x01  # the last float's lowest mantissa bit: still a finite (1, 2) array
    entry.write_bytes(bytes(raw))
    assert np.isfinite(np.load(entry)).all()
    with caplog.at_level("WARNING", logger="geodiffloc.data"):
        out = cached_encode(enc, ["aa", "bbb"], cache_dir=tmp_path)
    assert enc.calls == 2 and out.tolist() == [[2.0, 2.0], [3.0, 0.0]]
    assert "SHA-256" in caplog.text
    # rebuilt: the next call is a hit again
    cached_encode(enc, ["aa", "bbb"], cache_dir=tmp_path)
    assert enc.calls == 2
    # truncated: the size check refuses it without hashing
    entry.write_bytes(entry.read_bytes()[:-4])
    cached_encode(enc, ["aa", "bbb"], cache_dir=tmp_path)
    assert enc.calls == 3 and "bytes, its manifest says" in caplog.text


def test_entry_without_its_manifest_is_recomputed(tmp_path) -> None:
    """A run killed between the array and its manifest leaves an entry nobody trusts."""
    enc = Counting()
    cached_encode(enc, ["aa"], cache_dir=tmp_path)
    (entry,) = (tmp_path / "embeddings").glob("*.npy")
    entry.with_suffix(".json").unlink()
    assert cached_encode(enc, ["aa"], cache_dir=tmp_path).tolist() == [[2.0, 2.0]]
    assert enc.calls == 2 and entry.with_suffix(".json").exists()
