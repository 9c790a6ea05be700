"""The one cache fingerprint: stable across runs, different whenever content differs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodiffloc._fingerprint import fingerprint, module_fingerprint

ROOT = Path(__file__).resolve().parents[1]


def _sha(*chunks: tuple[bytes, bytes]) -> str:
    """Independent reference: the documented encoding, tag + 8-byte length + payload."""
    h = hashlib.sha256()
    for tag, payload in chunks:
        h.update(tag + len(payload).to_bytes(8, "little") + payload)
    return h.hexdigest()


def test_matches_the_documented_encoding():
    assert fingerprint("ab") == _sha((b"s", b"ab"))
    assert fingerprint(["ab", 3]) == _sha((b"l", b"2"), (b"s", b"ab"), (b"i", b"3"))
    arr = np.arange(3, dtype="<f8")
    assert fingerprint(arr) == _sha((b"a", b"<f8|(3,)"), (b"v", arr.tobytes()))


def test_stable_across_processes():
    # Another interpreter with another str-hash seed gives the same keys.
    code = ("import numpy as np, torch\n"
            "from geodiffloc._fingerprint import fingerprint\n"
            "print(fingerprint('enc', ['a', 'b'], {'x': 1, 'y': [2.5, None]}, "
            "np.arange(4.0), torch.arange(3), b'raw'))\n")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env=env).stdout.strip()
    assert out == fingerprint("enc", ["a", "b"], {"x": 1, "y": [2.5, None]}, np.arange(4.0),
                              torch.arange(3), b"raw")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=5), max_size=4), st.lists(st.text(max_size=5), max_size=4))
def test_different_string_lists_different_keys(a, b):
    assert (fingerprint(a) == fingerprint(b)) == (a == b)


@pytest.mark.parametrize("changed", [
    lambda x: x.astype(np.float32),           # dtype
    lambda x: x.reshape(2, 3),                # shape
    lambda x: np.where(np.arange(6) == 4, x + 1e-12, x),  # one value, by one ulp-ish
    lambda x: x[::-1].copy(),                 # order
    lambda x: torch.from_numpy(x),            # a tensor is not an array
])
def test_any_change_of_content_changes_the_key(changed):
    x = np.linspace(0.0, 1.0, 6)
    assert fingerprint(changed(x)) != fingerprint(x)


def test_types_and_boundaries_do_not_collide():
    assert fingerprint(1) != fingerprint(1.0) != fingerprint("1") != fingerprint(True)
    assert fingerprint(["ab", "c"]) != fingerprint(["a", "bc"])
    assert fingerprint(("a",), "b") != fingerprint(("a", "b"))
    assert fingerprint(Path("a.png")) != fingerprint("a.png")
    assert fingerprint(float("nan")) == fingerprint(float("nan"))


def test_dict_order_does_not_matter_but_values_do():
    assert fingerprint({"a": 1, "b": [2]}) == fingerprint({"b": [2], "a": 1})
    assert fingerprint({"a": 1, "b": [2]}) != fingerprint({"a": 1, "b": [3]})


def test_tensor_dtypes_numpy_lacks_and_noncontiguous_views():
    t = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    assert fingerprint(t) == fingerprint(t.clone())
    assert fingerprint(t) != fingerprint(t.float())
    assert fingerprint(t.T) == fingerprint(t.T.contiguous())


def test_pil_images_by_pixels():
    from PIL import Image

    a = Image.new("RGB", (4, 3), (10, 20, 30))
    assert fingerprint(a) == fingerprint(Image.new("RGB", (4, 3), (10, 20, 30)))
    assert fingerprint(a) != fingerprint(Image.new("RGB", (4, 3), (10, 20, 31)))
    assert fingerprint(a) != fingerprint(Image.new("RGB", (3, 4), (10, 20, 30)))


def test_unstable_parts_are_refused():
    with pytest.raises(ValueError, match=r"cannot fingerprint a builtins\.object"):
        fingerprint(object())
    with pytest.raises(ValueError, match="cannot fingerprint"):
        fingerprint(np.array([object()]))
    with pytest.raises(ValueError, match="length"):
        fingerprint("x", length=4)


def test_module_fingerprint_follows_in_place_updates():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    before = module_fingerprint(lin)
    saved = {k: v.clone() for k, v in lin.state_dict().items()}
    assert module_fingerprint(lin) == before  # memoised, same answer
    with torch.no_grad():
        lin.bias.add_(1.0)
    changed = module_fingerprint(lin)
    assert changed != before
    lin.load_state_dict(saved)
    assert module_fingerprint(lin) == before
    other = torch.nn.Linear(3, 2)
    other.load_state_dict(saved)
    assert module_fingerprint(other) == before  # content, not identity
    assert len(before) == 24 and len(module_fingerprint(lin, length=40)) == 40
