"""G3: learning a toy task, verification, candidates and fields, generators, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geodiffloc import G3
from geodiffloc.models.g3 import (
    Candidate,
    LocDiffGenerator,
    ReferenceDatabase,
    RetrievalGenerator,
)
from geodiffloc.sphere import geodesic_km

pytest.importorskip("lightning")

CENTRES = np.array([[48.85, 2.35], [40.71, -74.0], [35.68, 139.69], [-33.87, 151.21],
                    [-23.55, -46.63], [30.04, 31.24], [55.75, 37.62], [19.43, -99.13]])


def toy(n_per: int, seed: int, dim: int = 16):
    """Embeddings = noisy random code of a city; places scattered ~20 km around it."""
    rng = np.random.default_rng(seed)
    codes = np.random.default_rng(123).normal(size=(len(CENTRES), dim))
    lab = np.repeat(np.arange(len(CENTRES)), n_per)
    x = codes[lab] + 0.3 * rng.normal(size=(len(lab), dim))
    ll = CENTRES[lab] + 0.15 * rng.normal(size=(len(lab), 2))
    return (torch.tensor(x, dtype=torch.float32), torch.tensor(ll, dtype=torch.float64), lab)


def small(**kw):
    base = dict(input_dim=16, text_dim=len(CENTRES), embed_dim=16, n_freqs=16, hidden_dim=32,
                queue_size=64, seed=0)
    return G3(**{**base, **kw})


@pytest.fixture(scope="module")
def trained():
    x, ll, lab = toy(40, 0)
    m = small()
    text = torch.eye(len(CENTRES))[lab]  # the "description" of each city: a one-hot
    losses = m.fit(x, ll, text_embeddings=text, steps=150, batch_size=64, lr=3e-3,
                   progress=False)
    m.set_references(ReferenceDatabase(x, ll, texts=[f"city {i}" for i in lab]))
    return m, losses


def test_a_tiny_g3_learns_a_toy_task_far_better_than_chance(trained):
    m, losses = trained
    # (in-batch duplicates of the same city put a floor under the loss: ~log(batch / 8))
    assert np.mean(losses[-10:]) < 0.65 * np.mean(losses[:10])
    xt, llt, _ = toy(5, 99)
    for select in ("verify", "consensus", "top_reference"):
        p = m.predict(xt, select=select, n_references=10)
        err = geodesic_km(p["lat"], p["lon"], llt[:, 0].numpy(), llt[:, 1].numpy())
        # chance (a random city of 8) is within 200 km 1/8 of the time
        assert np.mean(err < 200) >= 0.9, select
    # verification alone: GPS retrieval over the city centres picks the right city
    q = m.embed_queries(xt)
    best = (q @ m.embed_locations(CENTRES).T).argmax(dim=1).numpy()
    assert np.mean(best == np.repeat(np.arange(len(CENTRES)), 5)) >= 0.9


class _Fixed:
    """A generator proposing the same candidates for every query."""

    name = "fixed"

    def __init__(self, pts):
        self.pts = pts

    def generate(self, query, references, k):
        return [Candidate(a, b, prompt="p") for a, b in self.pts[:k]]


def test_verification_picks_the_best_scored_candidate(trained):
    m, _ = trained
    xt, _, _ = toy(2, 5)
    gen = _Fixed([tuple(c) for c in CENTRES])
    cand = m.candidates(xt, generators=[gen], n_references=4, k=8)
    assert cand.crs.to_epsg() == 4326
    assert set(cand["source"]) == {"retrieved", "generated"}
    assert (cand.groupby("query").size() == 12).all()
    # independent recomputation of every candidate's score
    q = m.embed_queries(xt).double()
    loc = m.embed_locations(np.stack([cand["lat"], cand["lon"]], 1)).double()
    sim = (q[torch.from_numpy(cand["query"].to_numpy().copy())] * loc).sum(1).numpy()
    assert np.allclose(cand["similarity"], sim, atol=1e-5)
    for _, grp in cand.groupby("query"):
        assert np.isclose(grp["prob"].sum(), 1.0)
        assert grp.loc[grp["rank"] == 1, "similarity"].item() == pytest.approx(
            grp["similarity"].max())
    pred = m.predict(xt, candidates=cand)
    top = cand.loc[cand.groupby("query")["similarity"].idxmax()]
    assert np.allclose(pred["lat"], top["lat"]) and np.allclose(pred["lon"], top["lon"])
    assert np.allclose(pred["confidence"], top["prob"])
    top3 = m.predict(xt, top_k=3, candidates=cand)
    assert list(top3["rank"][:3]) == [1, 2, 3]
    assert (np.diff(top3["similarity"].to_numpy()[:3]) <= 1e-12).all()


def test_verify_vote_is_verification_times_the_generators_kernel_vote(trained):
    m, _ = trained
    xt, _, _ = toy(2, 5)
    # three generated candidates at centre 0, one at centre 3: a vote of 3 against 1
    gen = _Fixed([tuple(CENTRES[0])] * 3 + [tuple(CENTRES[3])])
    cand = m.candidates(xt, generators=[gen], n_references=6, k=4)
    pred = m.predict(xt, candidates=cand, select="verify_vote", consensus_km=300.0)
    top2 = m.predict(xt, top_k=2, candidates=cand, select="verify_vote", consensus_km=300.0)
    for i, grp in cand.groupby("query"):
        gen_ll = grp.loc[grp["source"] == "generated", ["lat", "lon"]].to_numpy()
        # float64 reference: vMF kernel of width 300 km around each generated candidate
        d = np.stack([geodesic_km(grp["lat"], grp["lon"], a, b) for a, b in gen_ll], 1)
        kernel = np.exp((np.cos(d / 6371.0088) - 1.0) / (300.0 / 6371.0088) ** 2)
        score = np.exp(grp["logit"].to_numpy()) * kernel.sum(1)
        best = int(np.argmax(score))
        assert pred["lat"].iloc[i] == pytest.approx(grp["lat"].iloc[best])
        assert pred["lon"].iloc[i] == pytest.approx(grp["lon"].iloc[best])
        assert pred["confidence"].iloc[i] == pytest.approx(score[best] / score.sum(), rel=1e-4)
        second = int(np.argsort(-score)[1])
        assert top2["lat"].iloc[2 * i + 1] == pytest.approx(grp["lat"].iloc[second])
    # with nothing generated the rule is plain verification
    refs_only = m.candidates(xt, generators=[], n_references=6)
    a = m.predict(xt, candidates=refs_only, select="verify_vote")
    b = m.predict(xt, candidates=refs_only, select="verify")
    assert np.allclose(a["lat"], b["lat"]) and np.allclose(a["confidence"], b["confidence"])
    with pytest.raises(ValueError, match="verify_vote"):
        m.predict(xt, candidates=cand, select="vote")


def test_probability_map_is_the_softmax_weighted_kernel_mixture(trained):
    m, _ = trained
    xt, llt, _ = toy(1, 7)
    cand = m.candidates(xt[:2], n_references=8)
    da = m.probability_map(xt[:2], resolution=2.0, kernel_km=200.0, candidates=cand)
    assert da.dims == ("query", "lat", "lon") and da.rio.crs.to_epsg() == 4326
    assert np.allclose(da.sum(("lat", "lon")).values, 1.0)
    lat, lon = float(llt[0, 0]), float(llt[0, 1])
    near = da.isel(query=0).sel(lat=slice(lat + 8, lat - 8), lon=slice(lon - 8, lon + 8))
    assert float(near.sum()) > 0.9
    # one candidate with all the mass: the field is that candidate's kernel
    one = cand[cand["query"] == 0].iloc[[0]].copy()
    one["prob"] = 1.0
    one.attrs["n_queries"] = 1
    d1 = m.probability_map(None, resolution=2.0, kernel_km=200.0, candidates=one)
    i = np.unravel_index(int(np.argmax(d1.values[0])), d1.shape[1:])
    assert abs(float(d1.lat[i[0]]) - one["lat"].item()) <= 1.0
    assert abs(float(d1.lon[i[1]]) - one["lon"].item()) <= 1.0


def test_retrieve_and_the_index_cache(trained, tmp_path):
    m, _ = trained
    xt, _, lab = toy(1, 3)
    r = m.retrieve(xt, k=3)
    assert list(r.columns[:4]) == ["query", "rank", "lat", "lon"]
    assert {"similarity", "reference_index", "text"} <= set(r.columns)
    # the top references are of the query's city
    assert all(t == f"city {c}" for t, c in zip(r[r["rank"] == 1]["text"], lab))
    idx = m.build_index(backend="torch", cache_dir=tmp_path)
    assert len(list((tmp_path / "g3_index").glob("*.npy"))) == 1
    assert m.build_index(backend="torch", cache_dir=tmp_path) is idx  # kept in memory
    m._index = None
    again = m.build_index(backend="torch", cache_dir=tmp_path)  # read from disk
    assert torch.equal(again.vectors, idx.vectors)


def test_locdiff_generator_samples_k_candidates_per_query():
    from geodiffloc import LocDiff

    ld = LocDiff(L=3, cond_dim=16, widths=(16,))
    gen = LocDiffGenerator(ld, steps=3)
    m = small()
    x, ll, _ = toy(3, 1)
    m.set_references(ReferenceDatabase(x, ll))
    cand = m.candidates(x[:2], generators=[gen], k=4, include_retrieved=0)
    assert (cand["generator"] == "locdiff").all() and len(cand) == 8
    assert cand["lat"].between(-90, 90).all()
    with pytest.raises(ValueError, match="conditions"):
        LocDiffGenerator(LocDiff(L=3, cond_dim=5, widths=(16,))).generate_batch(
            [type("Q", (), {"embedding": torch.zeros(16)})()], [None], 2)


def test_save_load_round_trip(trained, tmp_path):
    m, _ = trained
    p = m.save(tmp_path / "g3.safetensors")
    m2 = G3.load(p)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert len(m2.references) == len(m.references)
    assert torch.equal(m2.references.embeddings, m.references.embeddings)
    xt, _, _ = toy(1, 11)
    a = m.predict(xt, generators=[RetrievalGenerator()])
    b = m2.predict(xt, generators=[RetrievalGenerator()])
    assert np.allclose(a["lat"], b["lat"]) and np.allclose(a["confidence"], b["confidence"])
    with pytest.raises(FileExistsError):
        m.save(p)
    from geodiffloc import GeoCLIP

    with pytest.raises(ValueError, match="not a geodiffloc GeoCLIP checkpoint"):
        GeoCLIP.load(p)


def test_damaged_checkpoints_and_bad_arguments_are_refused(tmp_path):
    from geodiffloc.models.base import read_checkpoint, write_checkpoint
    from geodiffloc.models.g3.model import FORMAT

    m = small()
    p = m.save(tmp_path / "a.safetensors")
    t, cfg = read_checkpoint(p, fmt=FORMAT, what="G3")
    bad = dict(t)
    bad["query_head.2.weight"] = torch.zeros(3, 3)
    write_checkpoint(tmp_path / "b.safetensors", bad, fmt=FORMAT, config=cfg)
    with pytest.raises(ValueError, match=r"query_head\.2\.weight"):
        G3.load(tmp_path / "b.safetensors")
    write_checkpoint(tmp_path / "c.safetensors", t, fmt=FORMAT,
                     config={k: v for k, v in cfg.items() if k != "embed_dim"})
    with pytest.raises(ValueError, match="embed_dim"):
        G3.load(tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="GPS term"):
        small(loss_weights=(0.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="no reference database"):
        m.predict(torch.randn(1, 16))
    with pytest.raises(ValueError, match="16-d queries"):
        m.set_references(ReferenceDatabase(np.ones((2, 3)), [[0, 0], [1, 1]]))
    with pytest.raises(ValueError, match="no encoder"):
        m.embed_queries(["a text"])
    with pytest.raises(ValueError, match="NaN"):
        ReferenceDatabase(np.full((2, 3), np.nan), [[0, 0], [1, 1]])


class _LenEncoder:
    """A stand-in text encoder: (length, number of commas, 1)."""

    name, dim, modality = "len-encoder", 3, "text"

    def encode(self, texts, **kw):
        return torch.tensor([[len(t), t.count(","), 1.0] for t in texts])


def test_reference_databases_from_a_geodataframe_and_an_mp16_csv(tmp_path):
    import geopandas as gpd
    import pandas as pd

    emb = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    gdf = gpd.GeoDataFrame({"id": ["a", "b", "c"], "caption": ["x", "y", "z"],
                            "vec": list(emb)},
                           geometry=gpd.points_from_xy([2.35, -74.0, 139.7],
                                                       [48.85, 40.7, 35.7]),
                           crs="EPSG:4326").to_crs(3857)
    db = ReferenceDatabase.from_geodataframe(gdf, embedding_col="vec", text_col="caption",
                                             id_col="id")
    assert np.allclose(db.latlon.numpy(), [[48.85, 2.35], [40.7, -74.0], [35.7, 139.7]])
    assert db.texts == ["x", "y", "z"] and db.ids == ["a", "b", "c"]
    assert np.allclose(db.embeddings.numpy(), emb)
    with pytest.raises(ValueError, match="exactly one"):
        ReferenceDatabase.from_geodataframe(gdf)
    pd.DataFrame({"IMG_ID": ["p1", "p2"], "LAT": [10.0, 20.0], "LON": [30.0, 40.0]}).to_csv(
        tmp_path / "mp16.csv", index=False)
    np.save(tmp_path / "emb.npy", emb[:2])
    db2 = ReferenceDatabase.from_csv(tmp_path / "mp16.csv", tmp_path / "emb.npy")
    assert db2.ids == ["p1", "p2"] and db2.latlon[1].tolist() == [20.0, 40.0]
    with pytest.raises(ValueError, match="one \\(lat, lon\\) per embedding"):
        ReferenceDatabase.from_csv(tmp_path / "mp16.csv", emb)


def test_reference_database_from_a_feature_store(tmp_path):
    from geodiffloc.data import FeatureStore

    texts = ["a", "bb", "ccc"]
    ll = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    FeatureStore.build(tmp_path / "s", texts, ll, _LenEncoder(), chunk_size=2, progress=False)
    db = ReferenceDatabase.from_feature_store(tmp_path / "s")
    assert db.ids == texts and db.latlon.tolist() == ll
    assert db.embeddings[:, 0].tolist() == [1.0, 2.0, 3.0]


def test_description_tables_from_the_gazetteer_and_from_a_user_csv(tmp_path):
    import pandas as pd

    from geodiffloc.models.g3 import describe_locations
    from geodiffloc.train import description_table

    ll = torch.tensor([[48.8566, 2.3522], [35.6895, 139.6917], [48.8566, 2.3522]])
    enc = _LenEncoder()
    t = description_table(ll, enc, cache_dir=False)
    want = enc.encode(describe_locations(ll))
    assert torch.equal(t.lookup(ll.double()), want)
    pd.DataFrame({"LAT": [0.0, 10.0], "LON": [0.0, 10.0],
                  "description": ["a, b", "c"]}).to_csv(tmp_path / "d.csv", index=False)
    t2 = description_table(None, enc, source=str(tmp_path / "d.csv"), cache_dir=False)
    assert t2.lookup(torch.tensor([[10.0, 10.0], [0.0, 0.0]])).tolist() == [
        [1.0, 0.0, 1.0], [4.0, 1.0, 1.0]]
    (tmp_path / "bad.csv").write_text("lat,lon\n0,0\n")
    with pytest.raises(ValueError, match="description"):
        description_table(None, enc, source=str(tmp_path / "bad.csv"), cache_dir=False)
