"""GeoDataModule: seeded splits, random views in training, view 0 in validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from train_helpers import make_synthetic

from geodiffloc.data import FeatureStore
from geodiffloc.train import EmbeddingDataset, GeoDataModule, split_indices


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 300), frac=st.floats(0.01, 0.9), seed=st.integers(0, 10))
def test_split_is_a_reproducible_partition(n, frac, seed):
    tr, va = split_indices(n, frac, seed)
    assert len(np.intersect1d(tr, va)) == 0
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(n))
    assert len(tr) >= 1 and len(va) >= 1
    assert abs(len(va) - frac * n) <= 1 or len(va) in (1, n - 1)
    tr2, va2 = split_indices(n, frac, seed)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)


def test_split_depends_on_the_seed_and_rejects_bad_fractions():
    assert not np.array_equal(split_indices(100, 0.2, 0)[1], split_indices(100, 0.2, 1)[1])
    assert len(split_indices(5, 0.0, 0)[1]) == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            split_indices(10, bad, 0)


def test_tensors_random_views_in_training_view0_in_validation():
    emb, ll = make_synthetic(40, dim=8, views=3)
    dm = GeoDataModule.from_tensors(emb, ll, val_fraction=0.25, seed=0, batch_size=8,
                                    encoder="synthetic-enc")
    assert dm.encoder == {"name": "synthetic-enc", "dim": 8}
    assert len(dm.train_set) == 30 and len(dm.val_set) == 10
    # validation: always the clean view 0, in order, with the item index
    x, vll, idx = next(iter(dm.val_dataloader()))
    _, va = split_indices(40, 0.25, 0)
    assert torch.equal(idx, torch.arange(len(idx)))
    torch.testing.assert_close(x, emb[va[: len(idx)], 0])
    torch.testing.assert_close(vll, ll[va[: len(idx)]])
    assert x.dtype == torch.float32 and vll.dtype == torch.float64
    # training: each access draws one of the views; over many draws all of them appear
    torch.manual_seed(0)
    item = dm.train_set.embeddings[0]
    seen = set()
    for _ in range(60):
        e, _ = dm.train_set[0]
        matches = [v for v in range(3) if torch.equal(e, item[v])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2}


def test_explicit_validation_set_and_errors():
    emb, ll = make_synthetic(20, dim=4)
    dm = GeoDataModule.from_tensors(emb[:15], ll[:15], val_embeddings=emb[15:],
                                    val_latlon=ll[15:], batch_size=4)
    assert len(dm.train_set) == 15 and len(dm.val_set) == 5
    torch.testing.assert_close(dm.train_latlon, ll[:15])
    with pytest.raises(ValueError, match="both val_embeddings and val_latlon"):
        GeoDataModule.from_tensors(emb, ll, val_embeddings=emb)
    with pytest.raises(ValueError, match="validation embeddings are 3-d"):
        GeoDataModule.from_tensors(emb, ll, val_embeddings=emb[:, :3], val_latlon=ll)
    bad = emb.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="row 3"):
        EmbeddingDataset(bad, ll)
    with pytest.raises(ValueError, match="20 embeddings but 19"):
        EmbeddingDataset(emb, ll[:19])
    with pytest.raises(ValueError):
        EmbeddingDataset(emb, torch.full((20, 2), 95.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="batch sizes"):
        GeoDataModule.from_tensors(emb, ll, batch_size=0)


def test_no_validation_set_gives_no_val_loader():
    emb, ll = make_synthetic(10, dim=4)
    dm = GeoDataModule.from_tensors(emb, ll, val_fraction=0.0, batch_size=4)
    assert dm.val_set is None and dm.val_dataloader() == []
    assert sum(len(b[0]) for b in dm.train_dataloader()) == 10


class _OffsetEncoder:
    """Identity on embeddings; augmented views get +1 (so views are told apart)."""

    name, dim, modality, device = "offset", 4, "embedding", torch.device("cpu")

    def encode(self, inputs, *, batch_size=64, augment=False, progress=False):
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        return x + 1.0 if augment else x


def test_feature_store_views_and_split(tmp_path):
    emb, ll = make_synthetic(24, dim=4)
    store = FeatureStore.build(tmp_path / "s", emb.numpy(), ll.numpy(), _OffsetEncoder(),
                               views=2, chunk_size=7, progress=False)
    dm = GeoDataModule.from_store(store, val_fraction=0.25, seed=3, batch_size=5)
    tr, va = split_indices(24, 0.25, 3)
    assert dm.encoder == {"name": "offset", "dim": 4}
    torch.testing.assert_close(dm.train_latlon, ll[tr])
    x, vll, _ = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(x, emb[va[: len(x)]])  # view 0: the clean embedding
    torch.testing.assert_close(vll, ll[va[: len(x)]])
    torch.manual_seed(1)
    offsets = set()
    for _ in range(40):
        e, e_ll = dm.train_set[0]
        torch.testing.assert_close(e_ll, ll[tr[0]])
        offsets.add(round(float((e - emb[tr[0]]).mean()), 4))
    assert offsets == {0.0, 1.0}


def test_feature_store_separate_validation_store_must_match(tmp_path):
    emb, ll = make_synthetic(12, dim=4)
    FeatureStore.build(tmp_path / "tr", emb.numpy(), ll.numpy(), _OffsetEncoder(),
                       progress=False)
    FeatureStore.build(tmp_path / "va", emb[:5].numpy(), ll[:5].numpy(), _OffsetEncoder(),
                       progress=False)
    dm = GeoDataModule.from_store(tmp_path / "tr", val_store=tmp_path / "va", batch_size=4)
    assert len(dm.train_set) == 12 and len(dm.val_set) == 5

    class Other(_OffsetEncoder):
        name = "other"

    FeatureStore.build(tmp_path / "ot", emb[:5].numpy(), ll[:5].numpy(), Other(),
                       progress=False)
    with pytest.raises(ValueError, match="same encoder"):
        GeoDataModule.from_store(tmp_path / "tr", val_store=tmp_path / "ot")
    with pytest.raises(ValueError, match="not a feature store"):
        GeoDataModule.from_store(tmp_path / "nothing")
