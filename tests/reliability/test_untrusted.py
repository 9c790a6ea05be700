"""Untrusted files: decompression bombs, disk full, read-only caches, escaping paths."""

from __future__ import annotations

import errno
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from geodiffloc.encoders.efficientnet import load_image as load_efficientnet
from geodiffloc.encoders.openclip import load_image as load_openclip


def _bomb(path: Path, side: int = 40_000) -> Path:
    """A valid 1x1 PNG whose header then claims side x side pixels (1.6 gigapixels)."""
    Image.new("RGB", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4:ihdr + 12] = struct.pack(">II", side, side)
    crc = zlib.crc32(bytes(raw[ihdr:ihdr + 17]))
    raw[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("loader", [load_openclip, load_efficientnet])
def test_decompression_bombs_are_refused(tmp_path, loader):
    bomb = _bomb(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match="safe limit"):
        loader(bomb)
    ok = tmp_path / "ok.png"
    Image.new("RGB", (4, 3)).save(ok)
    assert loader(ok) is not None


def _tiny_cli(monkeypatch, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import rel_helpers

    import geodiffloc.encoders as encoders

    real = encoders.encoder_from_name
    monkeypatch.setattr(encoders, "encoder_from_name", lambda name, **kw: (
        rel_helpers.HashWords() if name == rel_helpers.ENCODER_NAME else real(name, **kw)))
    return rel_helpers.save_tiny_model(tmp_path / "tiny.safetensors")


ARGS = ["--no-progress", "--samples", "2", "--sampler", "ddim", "--steps", "2",
        "--resolution", "10"]


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from geodiffloc import _io
    from geodiffloc.cli.main import main

    model = _tiny_cli(monkeypatch, tmp_path)
    out = tmp_path / "out"
    real = _io.os.replace

    def full(src, dst):
        if str(dst).endswith("COMMIT"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(_io.os, "replace", full)
    assert main(["locate", "Kyoto temple", "-o", str(out), "--model", str(model), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0] and "Traceback" not in err[0]
    assert list(out.iterdir()) == []


def test_read_only_cache_needing_training_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib

    from geodiffloc.cli.main import main

    dm = importlib.import_module("geodiffloc.pipeline.default_model")
    cache = tmp_path / "cache"
    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(cache))
    real = tempfile.mkstemp

    def read_only(*a, **k):
        if str(k.get("dir", "")).startswith(str(cache)):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)

    def never(*a, **k):
        raise AssertionError("must not start training into an unwritable cache")

    monkeypatch.setattr(dm, "train_default_model", never)
    monkeypatch.setattr("geodiffloc.encoders.text.SentenceTransformerEncoder",
                        _tiny_encoder_class())
    assert main(["locate", "Kyoto temple", "-o", str(tmp_path / "out"), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GEODIFFLOC_CACHE_DIR" in err[0]


def _tiny_encoder_class():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import rel_helpers

    return rel_helpers.HashWords


def test_config_paths_cannot_escape_the_output_folder():
    """locate writes only fixed names into out_dir; the staging commit record is sanitised."""
    from geodiffloc._io import recover_staged
    from geodiffloc.pipeline.locate import OUTPUT_FILES

    assert all("/" not in n and "\\" not in n and not n.startswith(".")
               for n in OUTPUT_FILES.values())
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "out"
        stage = root / ".staging-999999999-x"
        stage.mkdir(parents=True)
        (stage / "COMMIT").write_text("../escaped\n/abs\n..\n")
        recover_staged(root)
        assert not (Path(d) / "escaped").exists()
        assert list(root.iterdir()) == []
