"""open_clip encoders on a tiny random-initialised config (nothing is downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from geodiffloc.encoders import Encoder  # noqa: E402
from geodiffloc.encoders.openclip import (  # noqa: E402
    OpenCLIPImageEncoder,
    OpenCLIPTextEncoder,
    load_image,
)

TINY_NAME = "geodiffloc-tiny-openclip"
TINY_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                   "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("oc") / f"{TINY_NAME}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    return TINY_NAME


@pytest.fixture(scope="module")
def image_encoder(tiny_name) -> OpenCLIPImageEncoder:
    return OpenCLIPImageEncoder(tiny_name, pretrained=None)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 40, 56), generator=g, dtype=torch.uint8)


def test_protocol_name_dim_and_frozen(image_encoder):
    enc = image_encoder
    assert isinstance(enc, Encoder)
    assert enc.name == f"open_clip:{TINY_NAME}/random:image"
    assert enc.dim == TINY_CFG["embed_dim"] and enc.modality == "image"
    assert not enc.clip.training
    assert not any(p.requires_grad for p in enc.clip.parameters())


def test_all_input_types_give_the_same_embedding(image_encoder, tmp_path):
    from PIL import Image

    img = _images(1)[0]
    hwc = img.permute(1, 2, 0).numpy()
    Image.fromarray(hwc).save(tmp_path / "a.png")
    outs = [
        image_encoder.encode([img]),
        image_encoder.encode(img.float() / 255.0),
        image_encoder.encode([Image.fromarray(hwc)]),
        image_encoder.encode([tmp_path / "a.png"]),
        image_encoder.encode([str(tmp_path / "a.png")]),
        image_encoder.encode(hwc),
    ]
    for o in outs:
        assert o.shape == (1, 24) and o.dtype == torch.float32
        assert torch.allclose(o, outs[0], atol=1e-5)


def test_eval_preprocessing_matches_clip_recipe(image_encoder):
    """Resize shorter side, centre crop, normalise: compared with a manual torchvision run."""
    from torchvision.transforms.v2 import functional as F

    img = _images(1, seed=3)[0].float() / 255.0
    x = F.resize(img, 32, interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    x = F.center_crop(x, [32, 32]).clamp(0, 1)
    x = F.normalize(x, list(open_clip.OPENAI_DATASET_MEAN), list(open_clip.OPENAI_DATASET_STD))
    with torch.no_grad():
        ref = image_encoder.clip.encode_image(x[None])
    assert torch.allclose(image_encoder.encode(img), ref, atol=1e-5)


def test_batching_does_not_change_results(image_encoder):
    imgs = _images(5)
    a = image_encoder.encode(imgs, batch_size=2)
    b = image_encoder.encode(imgs, batch_size=5)
    assert a.shape == (5, 24) and torch.allclose(a, b, atol=1e-5)


def test_augment_gives_random_views_and_ten_crop_is_deterministic(image_encoder):
    imgs = _images(2)
    torch.manual_seed(0)
    a = image_encoder.encode(imgs, augment=True)
    b = image_encoder.encode(imgs, augment=True)
    assert not torch.allclose(a, b)
    v1 = image_encoder.encode_views(imgs)
    v2 = image_encoder.encode_views(imgs)
    assert v1.shape == (2, 10, 24) and torch.equal(v1, v2)
    # crops differ from each other
    assert float((v1[:, 0] - v1[:, 1]).abs().max()) > 0
    assert image_encoder.encode_views(imgs, views=3).shape == (2, 3, 24)


def test_text_encoder_shares_weights(image_encoder, tiny_name):
    text = image_encoder.text_encoder()
    assert text.clip is image_encoder.clip
    assert text.name == f"open_clip:{TINY_NAME}/random:text" and text.dim == 24
    e = text.encode(["desert", "Niagara Falls"])
    assert e.shape == (2, 24) and torch.isfinite(e).all()
    tok = text.tokenizer(["desert"])
    with torch.no_grad():
        assert torch.allclose(e[:1], text.clip.encode_text(tok), atol=1e-5)
    # a second constructor call reuses the already-built model
    assert OpenCLIPTextEncoder(tiny_name, pretrained=None).clip is image_encoder.clip
    aug = text.encode(["desert"] * 20, augment=True, generator=torch.Generator().manual_seed(0))
    assert len({tuple(np.round(r.numpy(), 5)) for r in aug}) > 1


def test_local_checkpoint_path(image_encoder, tiny_name, tmp_path):
    path = tmp_path / "tiny.pt"
    sd = {k: v + 0.01 for k, v in image_encoder.clip.state_dict().items()}
    torch.save(sd, path)
    enc = OpenCLIPImageEncoder(tiny_name, pretrained=path)
    assert enc.name == f"open_clip:{TINY_NAME}/file=tiny.pt:image"
    assert torch.allclose(enc.clip.state_dict()["visual.proj"], sd["visual.proj"])


def test_errors(tiny_name, image_encoder):
    with pytest.raises(ValueError, match="no model config"):
        OpenCLIPImageEncoder("no-such-model", pretrained=None)
    with pytest.raises(ValueError, match="local checkpoint"):
        OpenCLIPImageEncoder(tiny_name, pretrained="no-such-tag")
    with pytest.raises(ValueError, match="does not exist"):
        image_encoder.encode(["/nonexistent/photo.jpg"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(torch.full((3, 8, 8), 2.0))
    with pytest.raises(ValueError, match="no images"):
        image_encoder.encode([])
    with pytest.raises(ValueError, match="strings"):
        image_encoder.text_encoder().encode([3])


def test_offline_hub_failure_names_local_option(monkeypatch):
    import open_clip.factory as factory

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(factory, "download_pretrained", offline)
    tag = open_clip.list_pretrained_tags_by_model("RN50")[0]
    with pytest.raises(RuntimeError, match="pretrained='/path/to"):
        OpenCLIPImageEncoder("RN50", pretrained=tag)
