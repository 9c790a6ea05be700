"""The G3 model: geo-alignment network, reference database, diversification, verification.

Design notes and every choice the paper summary leaves open are in
``docs/concepts/g3.md``. Training goes through :class:`geodiffloc.train.G3Module`
(:meth:`G3.fit` is a convenience over it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...sphere import EARTH_RADIUS_KM, latlon_to_xyz
from ...sphere.grid import LatLonGrid
from .._validate import check_positive_int, real_embeddings
from ..base import Geolocator, load_state_strict, points_frame, read_checkpoint
from ..geoclip.location import LocationEncoder
from ..geoclip.training import GPSQueue, perturb_latlon
from .database import Backend, Kind, ReferenceDatabase, VectorIndex
from .generators import Candidate, Query, References, RetrievalGenerator
from .loss import alignment_loss

__all__ = ["FORMAT", "G3", "DescriptionTable"]

FORMAT = "geodiffloc.g3/1"

Select = Literal["verify", "verify_vote", "consensus", "top_reference"]


def _head(in_dim: int, out_dim: int) -> nn.Sequential:
    # GeoCLIP's image-head shape: Linear(in, in) -> ReLU -> Linear(in, out)
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))


class DescriptionTable:
    """Description embeddings keyed by location: what a training batch's texts are.

    Training batches carry embeddings and coordinates only; the description of an item
    is the one of its location (reverse geocoding is a function of the location), so a
    batch's description embeddings are looked up by nearest stored location (exact for
    the training locations themselves). Locations that repeat keep their first text.

    Parameters
    ----------
    latlon
        ``(m, 2)`` locations.
    embeddings
        ``(m, text_dim)`` embeddings of their descriptions.

    Examples
    --------
    >>> t = DescriptionTable([[0.0, 0.0], [10.0, 10.0]], torch.eye(2))
    >>> t.lookup(torch.tensor([[10.0, 10.0], [0.0, 0.0]])).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """

    def __init__(self, latlon: Any, embeddings: Any) -> None:
        from scipy.spatial import cKDTree

        ll = torch.as_tensor(np.asarray(latlon, dtype=np.float64).reshape(-1, 2))
        emb = torch.as_tensor(embeddings, dtype=torch.float32)
        if emb.ndim != 2 or emb.shape[0] != ll.shape[0] or ll.shape[0] == 0:
            raise ValueError(f"need (m, 2) locations and (m, d) description embeddings, m >= 1; "
                             f"got {tuple(ll.shape)} and {tuple(emb.shape)}.")
        self.embeddings = emb
        self.dim = int(emb.shape[1])
        self._tree = cKDTree(latlon_to_xyz(ll).numpy())

    def lookup(self, latlon: torch.Tensor) -> torch.Tensor:
        """Description embeddings ``(B, text_dim)`` of the nearest stored locations."""
        xyz = latlon_to_xyz(latlon.detach().to("cpu", torch.float64)).numpy()
        _, idx = self._tree.query(xyz, k=1)
        return self.embeddings[torch.as_tensor(np.asarray(idx, dtype=np.int64))]


class G3(nn.Module, Geolocator):
    """G3: retrieval-augmented geolocation with geo-alignment, diversification, verification.

    **Geo-alignment** maps three modalities into one space: the query (any encoder's
    embedding: image, caption, precomputed) through a query head, the place's textual
    description (MP16-Pro style, see :func:`~geodiffloc.models.g3.describe_locations`)
    through a text head, and GPS through GeoCLIP's
    :class:`~geodiffloc.models.geoclip.LocationEncoder` with GeoCLIP's queue of GPS
    negatives; loss :func:`~geodiffloc.models.g3.alignment_loss`. **Geo-diversification**
    retrieves the most similar references of a :class:`ReferenceDatabase` and asks
    candidate generators (:mod:`~geodiffloc.models.g3.generators`) for locations.
    **Geo-verification** scores every candidate (retrieved and generated) by the aligned
    query–GPS similarity and keeps the best.

    Parameters
    ----------
    input_dim
        Width of the query embeddings.
    text_dim
        Width of the description embeddings (default ``input_dim``).
    embed_dim, sigmas, n_freqs, hidden_dim
        The shared space and the location encoder (see :class:`LocationEncoder`).
    temperature
        Initial temperature of the three learnable logit scales.
    queue_size, batch_noise_m, queue_noise_m
        GeoCLIP's GPS queue and GPS noise (metres).
    loss_weights
        ``(w_qg, w_qt, w_tg)`` of the query–GPS, query–text and text–GPS terms.
    encoder, text_encoder
        Optional encoders of raw queries and of descriptions (recorded in checkpoints).
    references
        Optional :class:`ReferenceDatabase` (stored in checkpoints).
    seed
        Seeds the initial weights, the random Fourier features and the queue.

    Examples
    --------
    >>> m = G3(input_dim=8, text_dim=6, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=8)
    >>> m.set_references(ReferenceDatabase(torch.randn(20, 8), torch.rand(20, 2) * 40))
    >>> gdf = m.predict(torch.randn(2, 8))
    >>> list(gdf.columns)[:5]
    ['query', 'lat', 'lon', 'confidence', 'source']
    """

    checkpoint_format = FORMAT
    model_name = "G3"
    _pending_references: Any  # a loaded checkpoint's reference metadata, until set up

    def __init__(
        self,
        *,
        input_dim: int,
        text_dim: int | None = None,
        embed_dim: int = 512,
        sigmas: Sequence[float] = (2**0, 2**4, 2**8),
        n_freqs: int = 256,
        hidden_dim: int = 1024,
        temperature: float = 0.07,
        queue_size: int = 4096,
        batch_noise_m: float = 150.0,
        queue_noise_m: float = 1000.0,
        loss_weights: Sequence[float] = (1.0, 1.0, 0.0),
        encoder: Any = None,
        text_encoder: Any = None,
        references: ReferenceDatabase | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.text_dim = check_positive_int(input_dim if text_dim is None else text_dim,
                                           "text_dim")
        if not (math.isfinite(float(temperature)) and float(temperature) > 0):
            raise ValueError(f"temperature must be > 0; got {temperature!r}.")
        w = [float(v) for v in loss_weights]
        if len(w) != 3 or any(not math.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
            raise ValueError("loss_weights must be three numbers >= 0 (query-GPS, query-text, "
                             f"text-GPS), not all 0; got {loss_weights!r}.")
        if w[0] == 0 and w[2] == 0:
            raise ValueError("loss_weights: at least one GPS term (query-GPS or text-GPS) must "
                             "be > 0, else the location encoder is never trained.")
        for name, v in (("batch_noise_m", batch_noise_m), ("queue_noise_m", queue_noise_m)):
            if not (math.isfinite(float(v)) and float(v) >= 0):
                raise ValueError(f"{name} must be a finite number of metres >= 0; got {v!r}.")
        self.loss_weights = tuple(w)
        self.batch_noise_m, self.queue_noise_m = float(batch_noise_m), float(queue_noise_m)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.location_encoder = LocationEncoder(sigmas, n_freqs=n_freqs,
                                                    hidden_dim=hidden_dim, embed_dim=embed_dim,
                                                    seed=seed)
            self.embed_dim = self.location_encoder.embed_dim
            self.query_head = _head(self.input_dim, self.embed_dim)
            self.text_head = _head(self.text_dim, self.embed_dim)
        # log scales of the (query, GPS), (query, text), (text, GPS) pairs
        self.logit_scales = nn.Parameter(torch.full((3,), math.log(1.0 / float(temperature))))
        self.queue = GPSQueue(int(queue_size), seed=seed)
        self.encoder_record: dict[str, Any] = {}
        self.text_encoder_record: dict[str, Any] = {}
        self._encoder: Any = None
        self._text_encoder: Any = None
        self.references: ReferenceDatabase | None = None
        self._index: tuple[str, VectorIndex] | None = None
        if encoder is not None:
            self.set_encoder(encoder)
        if text_encoder is not None:
            self.set_text_encoder(text_encoder)
        if references is not None:
            self.set_references(references)

    # -- basics -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return self.logit_scales.device

    def config(self) -> dict[str, Any]:
        """The constructor arguments (weights, encoders and references aside)."""
        return {"format": FORMAT, "input_dim": self.input_dim, "text_dim": self.text_dim,
                **self.location_encoder.config, "queue_size": self.queue.size,
                "batch_noise_m": self.batch_noise_m, "queue_noise_m": self.queue_noise_m,
                "loss_weights": list(self.loss_weights)}

    def set_encoder(self, encoder: Any) -> None:
        """Attach the encoder of raw queries (texts, images); checked against the record."""
        from ...encoders.base import check_encoder_matches

        if int(encoder.dim) != self.input_dim:
            raise ValueError(f"the encoder {encoder.name!r} gives {encoder.dim}-d embeddings but "
                             f"this G3 takes {self.input_dim}-d queries.")
        if self.encoder_record.get("name") not in (None, "precomputed"):
            check_encoder_matches(self.encoder_record, encoder)
        else:
            self.encoder_record = {"name": str(encoder.name), "dim": int(encoder.dim)}
        self._encoder = encoder

    def set_text_encoder(self, encoder: Any) -> None:
        """Attach the encoder of place descriptions; checked against the record."""
        from ...encoders.base import check_encoder_matches

        if int(encoder.dim) != self.text_dim:
            raise ValueError(f"the text encoder {encoder.name!r} gives {encoder.dim}-d "
                             f"embeddings but this G3 takes {self.text_dim}-d descriptions.")
        if self.text_encoder_record.get("name") not in (None, "precomputed"):
            check_encoder_matches(self.text_encoder_record, encoder)
        else:
            self.text_encoder_record = {"name": str(encoder.name), "dim": int(encoder.dim)}
        self._text_encoder = encoder

    def _rows(self, inputs: Any, dim: int, what: str, encoder: Any,
              batch_size: int = 64) -> tuple[torch.Tensor, list[str] | None]:
        """Embeddings ``(n, dim)`` (and the raw texts/paths) from arrays or raw inputs."""
        texts = None
        if inputs is None:
            raise ValueError(f"{what} are missing (None): pass (n, {dim}) embeddings or raw "
                             "inputs.")
        if not isinstance(inputs, torch.Tensor | np.ndarray):
            if isinstance(inputs, str | os.PathLike):
                inputs = [inputs]
            seq = list(inputs)
            if seq and all(isinstance(v, str | os.PathLike) for v in seq):
                if encoder is None:
                    raise ValueError(f"this G3 has no encoder for raw {what}; pass (n, {dim}) "
                                     "embeddings or attach one (set_encoder / "
                                     "set_text_encoder).")
                texts = [os.fspath(v) for v in seq]
                inputs = encoder.encode(texts, batch_size=batch_size, progress=False)
            else:
                inputs = np.asarray(seq)
        x = real_embeddings(inputs, what)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != dim or x.shape[0] == 0:
            raise ValueError(f"{what} must have shape (n, {dim}) with n >= 1; got "
                             f"{tuple(x.shape)}.")
        if not bool(torch.isfinite(x).all()):
            row = int(torch.nonzero(~torch.isfinite(x).all(dim=1))[0])
            raise ValueError(f"{what} row {row} has NaN or inf embeddings.")
        return x.to(self.device, torch.float32), texts

    # -- embeddings ---------------------------------------------------------------------
    def project_queries(self, x: torch.Tensor) -> torch.Tensor:
        """Query embeddings ``(n, input_dim)`` -> aligned space (not normalised)."""
        return self.query_head(x)

    def project_texts(self, t: torch.Tensor) -> torch.Tensor:
        """Description embeddings ``(n, text_dim)`` -> aligned space (not normalised)."""
        return self.text_head(t)

    @torch.no_grad()
    def embed_queries(self, inputs: Any, *, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised aligned query embeddings ``(n, embed_dim)`` (inputs as in predict)."""
        x, _ = self._rows(inputs, self.input_dim, "queries", self._encoder)
        out = [F.normalize(self.project_queries(x[s:s + batch_size]), dim=1)
               for s in range(0, x.shape[0], batch_size)]
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: Any) -> torch.Tensor:
        """L2-normalised aligned description embeddings ``(n, embed_dim)``."""
        t, _ = self._rows(texts, self.text_dim, "descriptions", self._text_encoder)
        return F.normalize(self.project_texts(t), dim=1)

    @torch.no_grad()
    def embed_locations(self, latlon: Any) -> torch.Tensor:
        """L2-normalised location embeddings ``(n, embed_dim)`` of ``(lat, lon)`` degrees."""
        ll = torch.as_tensor(np.asarray(latlon.cpu() if isinstance(latlon, torch.Tensor)
                                        else latlon, dtype=np.float64).reshape(-1, 2))
        return self.location_encoder.embed(ll.to(self.device, torch.float32), normalize=True)

    # -- training -----------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, latlon: torch.Tensor, text: torch.Tensor, *,
                      update_queue: bool = True, generator: torch.Generator | None = None,
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The geo-alignment loss on a batch, and its parts (for logging).

        Parameters
        ----------
        x
            ``(B, input_dim)`` query embeddings (or ``(B, P, input_dim)`` views: each view
            is a row paired with the same text and its own noisy GPS).
        latlon
            ``(B, 2)`` true ``(lat, lon)`` degrees.
        text
            ``(B, text_dim)`` description embeddings.
        update_queue
            Push the batch's coordinates into the GPS queue afterwards.
        generator
            Draws the GPS noise.

        Returns
        -------
        (loss, parts)
            ``parts``: ``qg``, ``qt``, ``tg`` (unweighted) and ``acc`` (share of rows
            whose own location is the most similar in the batch).
        """
        if x.ndim == 3:
            p = x.shape[1]
            x = x.reshape(-1, x.shape[-1])
            latlon = latlon.repeat_interleave(p, dim=0)
            text = text.repeat_interleave(p, dim=0)
        if x.shape[-1] != self.input_dim or text.shape[-1] != self.text_dim or \
                latlon.shape != (x.shape[0], 2) or text.shape[0] != x.shape[0]:
            raise ValueError(f"need x (B, {self.input_dim}), latlon (B, 2), text "
                             f"(B, {self.text_dim}); got {tuple(x.shape)}, "
                             f"{tuple(latlon.shape)}, {tuple(text.shape)}.")
        ll = latlon.to(self.device, torch.float64)
        gps = perturb_latlon(ll, self.batch_noise_m, generator=generator)
        queue = self.queue.noisy(self.queue_noise_m, generator=generator).to(gps.dtype)
        locs = self.location_encoder(torch.cat([gps, queue]).to(torch.float32))
        b = x.shape[0]
        q = self.project_queries(x.to(self.device, torch.float32))
        t = self.project_texts(text.to(self.device, torch.float32))
        s = self.logit_scales
        w = self.loss_weights
        loss, parts = alignment_loss(q, t, locs[:b], locs[b:], (s[0], s[1], s[2]),
                                     (float(w[0]), float(w[1]), float(w[2])))
        with torch.no_grad():
            sim = F.normalize(q, dim=1) @ F.normalize(locs[:b], dim=1).T
            parts["acc"] = (sim.argmax(dim=1) == torch.arange(b, device=sim.device)).float().mean()
        if update_queue:
            self.queue.push(latlon.detach().to(self.queue.latlon.device))
        return loss, parts

    def description_embeddings(self, latlon: Any, descriptions: Sequence[str] | None = None, *,
                               cache_dir: Any = None, progress: bool = False) -> torch.Tensor:
        """Embeddings ``(n, text_dim)`` of the places' descriptions (text encoder, cached).

        ``descriptions``: one text per location (a user column), or ``None`` to build
        them by reverse geocoding (:func:`~geodiffloc.models.g3.describe_locations`).

        Raises
        ------
        ValueError
            No text encoder attached, or a wrong number of descriptions.
        """
        from ...data.cache import cached_encode
        from .descriptions import describe_locations

        if self._text_encoder is None:
            raise ValueError("descriptions need a text encoder: set_text_encoder(...) or "
                             "text_encoder= (e.g. the bundled MiniLM, or CLIP's text tower), "
                             "or pass description embeddings.")
        ll = np.asarray(latlon.cpu() if isinstance(latlon, torch.Tensor) else latlon,
                        dtype=np.float64).reshape(-1, 2)
        texts = describe_locations(ll) if descriptions is None else [str(d) for d in
                                                                     descriptions]
        if len(texts) != len(ll):
            raise ValueError(f"{len(texts)} descriptions for {len(ll)} locations.")
        return cached_encode(self._text_encoder, texts, cache_dir=cache_dir, progress=progress)

    def fit(
        self, embeddings: Any, latlon: Any, *, descriptions: Sequence[str] | None = None,
        text_embeddings: Any = None, steps: int = 1000, batch_size: int = 256,
        lr: float = 1e-3, weight_decay: float = 1e-6, seed: int = 0, progress: bool = True,
        clip_grad_norm: float | None = 1.0,
    ) -> list[float]:
        """Train in place on in-memory embeddings: a convenience over :mod:`geodiffloc.train`.

        Runs the same :class:`~geodiffloc.train.G3Module` as ``geodiffloc train g3``
        (Adam, cosine schedule) with nothing written to disk; needs the ``[train]`` extra.

        Parameters
        ----------
        embeddings, latlon
            ``(n, input_dim)`` query embeddings and ``(n, 2)`` ``(lat, lon)`` degrees.
        descriptions, text_embeddings
            The places' descriptions as texts (encoded with the text encoder) or as
            ``(n, text_dim)`` embeddings; neither: built by reverse geocoding.
        steps, batch_size, lr, weight_decay, seed, progress, clip_grad_norm
            Optimisation.

        Returns
        -------
        list[float]
            The loss of every step.
        """
        from ..._hooks import trainer

        ll = torch.as_tensor(np.asarray(latlon.cpu() if isinstance(latlon, torch.Tensor)
                                        else latlon, dtype=np.float64).reshape(-1, 2))
        if text_embeddings is None:
            text_embeddings = self.description_embeddings(ll, descriptions, progress=progress)
        table = DescriptionTable(ll, torch.as_tensor(np.asarray(
            text_embeddings.cpu() if isinstance(text_embeddings, torch.Tensor)
            else text_embeddings, dtype=np.float32)))
        fit_in_memory = trainer()
        optim = {"lr": float(lr), "weight_decay": float(weight_decay)}
        return fit_in_memory(self, embeddings, ll, steps=steps, batch_size=batch_size,
                             optim=optim, clip_grad_norm=clip_grad_norm, seed=seed,
                             progress=progress, module_options={"descriptions": table})

    # -- reference database -------------------------------------------------------------
    def set_references(self, references: ReferenceDatabase | None) -> None:
        """Attach the reference database (``None`` detaches it).

        Raises
        ------
        ValueError
            Embeddings of another width than the queries'.
        """
        if references is not None:
            if not isinstance(references, ReferenceDatabase):
                raise ValueError("references must be a ReferenceDatabase; got "
                                 f"{type(references).__name__}.")
            if references.dim != self.input_dim:
                raise ValueError(f"the references hold {references.dim}-d embeddings but this "
                                 f"G3 takes {self.input_dim}-d queries.")
        self.references = references
        self._index = None

    def build_index(self, *, backend: Backend = "auto", kind: Kind = "flat",
                    cache_dir: str | os.PathLike | Literal[False] | None = None,
                    batch_size: int = 4096, progress: bool = False) -> VectorIndex:
        """The nearest-neighbour index over the aligned reference embeddings (built once).

        The projected vectors are cached on disk (``.npy``, and the faiss HNSW graph),
        keyed by a fingerprint of the query head's weights and of the references, and
        kept in memory until the weights or the references change.

        Raises
        ------
        ValueError
            No reference database attached.
        """
        from ..._fingerprint import fingerprint, module_fingerprint
        from ..._io import atomic_path
        from ...data.cache import default_cache_dir

        if self.references is None:
            raise ValueError("no reference database: set_references(ReferenceDatabase(...)) "
                             "first (embeddings + coordinates of a geotagged collection).")
        key = fingerprint(module_fingerprint(self.query_head), self.references.fingerprint(),
                          backend, kind, length=32)
        if self._index is not None and self._index[0] == key:
            return self._index[1]
        folder = None if cache_dir is False else Path(
            default_cache_dir() if cache_dir is None else cache_dir) / "g3_index"
        vec = None
        if folder is not None and (folder / f"{key}.npy").is_file():
            try:
                arr = np.load(folder / f"{key}.npy", allow_pickle=False)
                if arr.shape == (len(self.references), self.embed_dim):
                    vec = torch.from_numpy(arr)
            except (OSError, ValueError):
                vec = None
        if vec is None:
            from tqdm.auto import tqdm

            emb = self.references.embeddings
            parts = []
            with torch.no_grad():
                for s in tqdm(range(0, len(emb), batch_size), disable=not progress,
                              desc="reference embeddings", unit="chunk"):
                    parts.append(F.normalize(self.project_queries(
                        emb[s:s + batch_size].to(self.device)), dim=1).cpu())
            vec = torch.cat(parts)
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                with atomic_path(folder / f"{key}.npy", overwrite=True) as tmp:
                    np.save(tmp, vec.numpy())
        faiss_index = None
        graph = None if folder is None else folder / f"{key}.faiss"
        if kind == "hnsw" and graph is not None and graph.is_file():
            import faiss

            faiss_index = faiss.read_index(str(graph))
        index = VectorIndex(vec, backend=backend, kind=kind, faiss_index=faiss_index)
        if kind == "hnsw" and graph is not None and faiss_index is None:
            index.save(graph)
        self._index = (key, index)
        return index

    @torch.no_grad()
    def retrieve(self, inputs: Any, k: int = 10, *, backend: Backend = "auto",
                 kind: Kind = "flat") -> Any:
        """The ``k`` most similar references of each query, as a GeoDataFrame.

        Returns
        -------
        geopandas.GeoDataFrame
            Columns ``query``, ``rank``, ``lat``, ``lon``, ``similarity``,
            ``reference_index`` (and ``text`` / ``id`` when the database has them).
        """
        q = self.embed_queries(inputs)
        _, sims, idx = self._retrieve(q, k, backend, kind)
        n, kk = idx.shape
        ll = self.references.latlon.numpy()[idx.reshape(-1)]  # type: ignore[union-attr]
        cols: dict[str, Any] = {"similarity": sims.reshape(-1).numpy().astype(np.float64),
                                "reference_index": idx.reshape(-1).numpy()}
        db = self.references
        assert db is not None
        if db.texts is not None:
            cols["text"] = np.asarray(db.texts, dtype=object)[idx.reshape(-1).numpy()]
        if db.ids is not None:
            cols["id"] = np.asarray(db.ids, dtype=object)[idx.reshape(-1).numpy()]
        return points_frame(ll[:, 0], ll[:, 1], cols,
                            leading={"query": np.repeat(np.arange(n), kk),
                                     "rank": np.tile(np.arange(1, kk + 1), n)},
                            attrs={"model": "G3", "references": db.name})

    def _retrieve(self, q: torch.Tensor, k: int, backend: Backend, kind: Kind,
                  ) -> tuple[list[References], torch.Tensor, torch.Tensor]:
        index = self.build_index(backend=backend, kind=kind)
        sims, idx = index.search(q.cpu(), check_positive_int(k, "n_references"))
        db = self.references
        assert db is not None
        ll = db.latlon.numpy()
        out = []
        for i in range(q.shape[0]):
            ii = idx[i].numpy()
            texts = None if db.texts is None else [db.texts[j] for j in ii]
            out.append(References(ll[ii], sims[i].numpy().astype(np.float64), texts))
        return out, sims, idx

    # -- diversification + verification -------------------------------------------------
    @torch.no_grad()
    def candidates(
        self,
        inputs: Any,
        *,
        generators: Sequence[Any] | None = None,
        n_references: int = 20,
        k: int = 5,
        include_retrieved: int | None = None,
        backend: Backend = "auto",
        kind: Kind = "flat",
    ) -> Any:
        """Every candidate of every query (retrieved + generated), scored by verification.

        Parameters
        ----------
        inputs
            ``(n, input_dim)`` embeddings, or raw inputs (texts, image paths) with an
            encoder attached.
        generators
            Candidate generators (default: one :class:`RetrievalGenerator`); ``[]`` keeps
            only the retrieved references.
        n_references
            References retrieved per query (what the generators see).
        k
            Candidates asked of each generator per prompt.
        include_retrieved
            How many of the retrieved references are candidates themselves (default all
            ``n_references``; 0: none).

        Returns
        -------
        geopandas.GeoDataFrame
            One row per candidate: ``query``, ``lat``, ``lon``, ``source``
            (``"retrieved"`` or ``"generated"``), ``generator``, ``prompt``,
            ``generator_score``, ``similarity`` (cosine of the aligned query and
            location embeddings), ``logit`` (scaled), ``prob`` (softmax over the query's
            candidates), ``rank`` (1 = best) and ``text`` (a chat answer or a reference
            text, where there is one).

        Raises
        ------
        ValueError
            No references, bad inputs or options.
        """
        gens = [RetrievalGenerator()] if generators is None else list(generators)
        for g in gens:
            if not callable(getattr(g, "generate", None)):
                raise ValueError(f"a generator needs generate(query, references, k); got "
                                 f"{type(g).__name__}.")
        x, raw = self._rows(inputs, self.input_dim, "queries", self._encoder)
        q = F.normalize(self.project_queries(x), dim=1)
        refs, _, _ = self._retrieve(q, n_references, backend, kind)
        n_keep = len(refs[0]) if include_retrieved is None else int(include_retrieved)
        queries = [Query(i, x[i].cpu(), None if raw is None else raw[i])
                   for i in range(x.shape[0])]
        per_query: list[list[tuple[Candidate, str, str]]] = [[] for _ in queries]
        for i, r in enumerate(refs):
            for j in range(min(n_keep, len(r))):
                per_query[i].append((Candidate(float(r.latlon[j, 0]), float(r.latlon[j, 1]),
                                               score=float(r.similarity[j]),
                                               text=None if r.texts is None else r.texts[j],
                                               prompt=f"ref{j + 1}"), "retrieved", "retrieval"))
        for g in gens:
            name = str(getattr(g, "name", type(g).__name__))
            if hasattr(g, "generate_batch"):
                lists = g.generate_batch(queries, refs, int(k))
            else:
                lists = [g.generate(qq, rr, int(k)) for qq, rr in zip(queries, refs)]
            for i, cands in enumerate(lists):
                per_query[i] += [(c, "generated", name) for c in cands
                                 if abs(c.lat) <= 90 and abs(c.lon) <= 360]
        return self._verify(q, per_query)

    def _verify(self, q: torch.Tensor, per_query: list[list[tuple[Candidate, str, str]]]) -> Any:
        rows: dict[str, list[Any]] = {k: [] for k in (
            "query", "lat", "lon", "source", "generator", "prompt", "generator_score", "text")}
        for i, cands in enumerate(per_query):
            for c, src, gen in cands:
                rows["query"].append(i)
                rows["lat"].append(float(c.lat))
                rows["lon"].append(((float(c.lon) + 180.0) % 360.0) - 180.0)
                rows["source"].append(src)
                rows["generator"].append(gen)
                rows["prompt"].append(c.prompt or "")
                rows["generator_score"].append(np.nan if c.score is None else float(c.score))
                rows["text"].append(c.text or "")
        qi = np.asarray(rows["query"], dtype=np.int64)
        ll = np.stack([np.asarray(rows["lat"]), np.asarray(rows["lon"])], 1) if len(qi) \
            else np.zeros((0, 2))
        sim = np.zeros(len(qi))
        if len(qi):
            emb = self.embed_locations(ll)
            sim = (q[torch.as_tensor(qi, device=q.device)] * emb).sum(dim=1).double().cpu().numpy()
        scale = float(self.logit_scales[0].detach().exp().clamp(max=100.0))
        logit = scale * sim
        prob = np.zeros(len(qi))
        rank = np.zeros(len(qi), dtype=np.int64)
        for i in range(len(per_query)):
            sel = np.flatnonzero(qi == i)
            if len(sel):
                z = logit[sel] - logit[sel].max()
                prob[sel] = np.exp(z) / np.exp(z).sum()
                order = np.argsort(-logit[sel], kind="stable")
                rank[sel[order]] = np.arange(1, len(sel) + 1)
        cols = {k: np.asarray(rows[k], dtype=object) for k in ("source", "generator", "prompt")}
        cols.update({"generator_score": np.asarray(rows["generator_score"], dtype=np.float64),
                     "similarity": sim, "logit": logit, "prob": prob, "rank": rank,
                     "text": np.asarray(rows["text"], dtype=object)})
        return points_frame(ll[:, 0], ll[:, 1], cols, leading={"query": qi},
                            attrs={"model": "G3", "n_queries": len(per_query)})

    @torch.no_grad()
    def predict(
        self,
        inputs: Any,
        top_k: int = 1,
        *,
        generators: Sequence[Any] | None = None,
        n_references: int = 20,
        k: int = 5,
        include_retrieved: int | None = None,
        select: Select = "verify",
        consensus_km: float = 100.0,
        candidates: Any = None,
        backend: Backend = "auto",
        kind: Kind = "flat",
    ) -> Any:
        """The best candidate(s) of each query.

        Parameters
        ----------
        inputs, generators, n_references, k, include_retrieved, backend, kind
            As in :meth:`candidates`.
        top_k
            Rows per query (``select="verify"`` or ``"verify_vote"`` only; a ``rank``
            column is added).
        select
            ``"verify"`` (G3): the candidate of highest aligned query–GPS similarity.
            ``"verify_vote"``: verification times the generators' vote, a product of
            experts: each candidate's verification logit plus the log of the kernel
            density of the generated candidates at it (``sum_j exp(kappa (x . x_j -
            1))``, the vote of ``"consensus"``, width ``consensus_km``), so a
            retrieved reference far from every generated candidate needs a much higher
            similarity to win; plain ``"verify"`` where nothing was generated.
            ``"consensus"`` (the ablation without verification): the generated candidate
            with the most generated candidates within ``consensus_km`` (a kernel vote),
            or the top reference when nothing was generated. ``"top_reference"``
            (alignment-only retrieval): the most similar reference's location.
        candidates
            A frame from :meth:`candidates` to choose from (skips the generation).

        Returns
        -------
        geopandas.GeoDataFrame
            ``query``, (``rank``), ``lat``, ``lon``, ``confidence`` (the candidate's
            verification probability; with ``"verify_vote"`` its share of the product),
            ``source``, ``generator``, ``prompt``, ``similarity``, ``n_candidates``.
        """
        if select not in ("verify", "verify_vote", "consensus", "top_reference"):
            raise ValueError(f"select must be 'verify', 'verify_vote', 'consensus' or "
                             f"'top_reference'; got {select!r}.")
        check_positive_int(top_k, "top_k")
        if top_k > 1 and select not in ("verify", "verify_vote"):
            raise ValueError("top_k > 1 needs select='verify' or 'verify_vote'.")
        cand = candidates if candidates is not None else self.candidates(
            inputs, generators=[] if select == "top_reference" else generators,
            n_references=n_references, k=k, include_retrieved=include_retrieved,
            backend=backend, kind=kind)
        qi = cand["query"].to_numpy()
        n = int(cand.attrs.get("n_queries", qi.max() + 1 if len(qi) else 0))
        picks: list[int] = []
        ranks: list[int] = []
        counts: list[int] = []
        confidence = cand["prob"].to_numpy().copy()
        for i in range(n):
            sel = np.flatnonzero(qi == i)
            if not len(sel):
                raise ValueError(f"query {i} has no candidates (no references and nothing "
                                 "generated).")
            counts.append(len(sel))
            if select == "verify":
                order = sel[np.argsort(cand["rank"].to_numpy()[sel], kind="stable")][:top_k]
            elif select == "verify_vote":
                score = cand["logit"].to_numpy()[sel] + self._log_votes(cand, sel, consensus_km)
                p = np.exp(score - score.max())
                confidence[sel] = p / p.sum()
                order = sel[np.argsort(-score, kind="stable")][:top_k]
            else:
                order = np.asarray([self._unverified(cand, sel, select, consensus_km)])
            picks += order.tolist()
            ranks += list(range(1, len(order) + 1))
        rows = cand.iloc[picks]
        lead: dict[str, Any] = {"query": rows["query"].to_numpy()}
        if top_k > 1:
            lead["rank"] = np.asarray(ranks)
        reps = np.asarray([counts[int(i)] for i in rows["query"].to_numpy()])
        return points_frame(
            rows["lat"].to_numpy(), rows["lon"].to_numpy(),
            {"confidence": confidence[picks], "source": rows["source"].to_numpy(),
             "generator": rows["generator"].to_numpy(), "prompt": rows["prompt"].to_numpy(),
             "similarity": rows["similarity"].to_numpy(), "n_candidates": reps},
            leading=lead, attrs={"model": "G3", "select": select})

    @staticmethod
    def _log_votes(cand: Any, sel: np.ndarray, consensus_km: float,
                   at: np.ndarray | None = None) -> np.ndarray:
        """Log kernel vote of the generated candidates among ``sel`` at ``at`` (default ``sel``).

        ``log sum_j exp(kappa (x . x_j - 1))`` over the generated ``x_j``, with ``kappa =
        1 / (consensus_km / R)^2`` (a von Mises–Fisher kernel of ~``consensus_km`` width);
        zeros when nothing was generated (the vote then changes no ranking).
        """
        at = sel if at is None else at
        generated = sel[cand["source"].to_numpy()[sel] == "generated"]
        if not len(generated):
            return np.zeros(len(at))

        def xyz(idx: np.ndarray) -> np.ndarray:
            ll = np.stack([cand["lat"].to_numpy()[idx], cand["lon"].to_numpy()[idx]], 1)
            return latlon_to_xyz(torch.as_tensor(ll, dtype=torch.float64)).numpy()

        kappa = 1.0 / (float(consensus_km) / EARTH_RADIUS_KM) ** 2
        z = kappa * (xyz(at) @ xyz(generated).T - 1.0)
        top = z.max(axis=1, keepdims=True)
        return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]

    @classmethod
    def _unverified(cls, cand: Any, sel: np.ndarray, select: str, consensus_km: float) -> int:
        src = cand["source"].to_numpy()[sel]
        retrieved = sel[src == "retrieved"]
        generated = sel[src == "generated"]
        if select == "top_reference" or not len(generated):
            if not len(retrieved):
                return int(sel[0])
            score = cand["generator_score"].to_numpy()[retrieved]
            return int(retrieved[np.argmax(score)])
        votes = cls._log_votes(cand, sel, consensus_km, at=generated)
        return int(generated[np.argmax(votes)])

    @torch.no_grad()
    def probability_map(
        self,
        inputs: Any,
        resolution: float = 1.0,
        *,
        kernel_km: float = 100.0,
        candidates: Any = None,
        bbox: tuple[float, float, float, float] | None = None,
        **candidate_options: Any,
    ) -> Any:
        """Where each query was taken: a softmax-weighted kernel mixture over its candidates.

        Each candidate ``c`` with verification probability ``p_c`` (the softmax of the
        aligned query–GPS logits over the query's candidates) spreads its mass as a
        spherical Gaussian (von Mises-Fisher) kernel of scale ``kernel_km``, normalised
        over the grid; the field is ``sum_c p_c K_c`` (cell masses summing to 1), so
        :func:`~geodiffloc.geo.to_geotiff`, zonal probabilities and credible regions work
        as for the other models.

        Parameters
        ----------
        resolution
            Cell size in degrees.
        kernel_km
            Kernel scale.
        candidates
            A frame from :meth:`candidates` (else built with ``candidate_options``).
        bbox
            ``(west, south, east, north)`` for a regional grid.

        Returns
        -------
        xarray.DataArray
            Dims ``("query", "lat", "lon")``, ``kind="mass"``, EPSG:4326.
        """
        if not (math.isfinite(float(kernel_km)) and float(kernel_km) > 0):
            raise ValueError(f"kernel_km must be a positive distance; got {kernel_km!r}.")
        cand = candidates if candidates is not None else self.candidates(inputs,
                                                                         **candidate_options)
        grid = LatLonGrid.global_(resolution) if bbox is None else LatLonGrid.from_bbox(
            resolution, bbox)
        n_lat, n_lon = grid.shape
        cxyz = latlon_to_xyz(grid.latlon(dtype=torch.float64))
        log_area = torch.log(torch.as_tensor(grid.cell_area_sr(), dtype=torch.float64)
                             ).repeat_interleave(n_lon)
        kappa = 1.0 / (float(kernel_km) / EARTH_RADIUS_KM) ** 2
        qi = cand["query"].to_numpy()
        n = int(cand.attrs.get("n_queries", qi.max() + 1 if len(qi) else 0))
        ll = torch.from_numpy(np.stack([cand["lat"].to_numpy(np.float64),
                                        cand["lon"].to_numpy(np.float64)], 1))
        xyz = latlon_to_xyz(ll)
        prob = torch.from_numpy(np.array(cand["prob"].to_numpy(), dtype=np.float64))
        out = np.zeros((n, n_lat * n_lon))
        for i in range(n):
            sel = torch.as_tensor(np.flatnonzero(qi == i))
            acc = torch.zeros(n_lat * n_lon, dtype=torch.float64)
            for s in range(0, len(sel), 64):
                part = sel[s:s + 64]
                kern = (kappa * (xyz[part] @ cxyz.T - 1.0) + log_area).softmax(dim=1)
                acc += (prob[part, None] * kern).sum(dim=0)
            out[i] = (acc / acc.sum().clamp_min(1e-300)).numpy()
        return grid.to_dataarray(
            out.reshape(n, n_lat, n_lon), kind="mass", leading_dim="query",
            leading_coords=np.arange(n),
            attrs={"model": "G3", "kernel_km": float(kernel_km),
                   "grid": "softmax-weighted kernel mixture over verified candidates"})

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint_config(self) -> dict[str, Any]:
        cfg = {**self.config(), "encoder": dict(self.encoder_record),
               "text_encoder": dict(self.text_encoder_record)}
        if self.references is not None:
            cfg["references"] = {"name": self.references.name, "n": len(self.references)}
        return cfg

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        tensors = dict(self.state_dict())
        if self.references is not None:
            tensors["references.embeddings"] = self.references.embeddings
            tensors["references.latlon"] = self.references.latlon
        return tensors

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        own = {k: v for k, v in tensors.items() if not k.startswith("references.")}
        load_state_strict(self, own, "G3 checkpoint")
        if "references.embeddings" in tensors:
            meta = getattr(self, "_pending_references", None) or {}
            self.set_references(ReferenceDatabase(
                tensors["references.embeddings"], tensors["references.latlon"],
                name=str(meta.get("name", "references"))))

    @classmethod
    def from_checkpoint_config(cls, cfg: dict[str, Any], *,
                               encoder: Any = None, text_encoder: Any = None) -> G3:
        model = cls(input_dim=cfg["input_dim"], text_dim=cfg["text_dim"],
                    embed_dim=cfg["embed_dim"], sigmas=tuple(cfg["sigmas"]),
                    n_freqs=cfg["n_freqs"], hidden_dim=cfg["hidden_dim"],
                    queue_size=cfg["queue_size"], batch_noise_m=cfg["batch_noise_m"],
                    queue_noise_m=cfg["queue_noise_m"], loss_weights=cfg["loss_weights"],
                    seed=0)
        model.encoder_record = dict(cfg.get("encoder") or {})
        model.text_encoder_record = dict(cfg.get("text_encoder") or {})
        model._pending_references = cfg.get("references")
        if encoder is not None:
            model.set_encoder(encoder)
        if text_encoder is not None:
            model.set_text_encoder(text_encoder)
        return model

    @classmethod
    def check_checkpoint(cls, cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
                         path: str | os.PathLike) -> None:
        """Refuse a damaged checkpoint: config keys and types, weight and reference shapes."""
        from .._validate import check_finite_weights

        check_finite_weights(tensors, path)
        where = os.fspath(path)
        need: dict[str, type | tuple[type, ...]] = {
            "input_dim": int, "text_dim": int, "embed_dim": int, "n_freqs": int,
            "hidden_dim": int, "queue_size": int, "sigmas": list, "loss_weights": list,
            "batch_noise_m": (int, float), "queue_noise_m": (int, float)}
        for key, typ in need.items():
            if key not in cfg:
                raise ValueError(f"{where!r}: the G3 config lacks {key!r}.")
            if not isinstance(cfg[key], typ) or isinstance(cfg[key], bool):
                raise ValueError(f"{where!r}: config {key!r} has the wrong type "
                                 f"({type(cfg[key]).__name__}).")
        for key in ("input_dim", "text_dim", "embed_dim", "n_freqs", "hidden_dim"):
            if not 1 <= cfg[key] <= 1_000_000:
                raise ValueError(f"{where!r}: config {key!r} = {cfg[key]} is out of range.")
        shapes = {"query_head.0.weight": (cfg["input_dim"], cfg["input_dim"]),
                  "query_head.2.weight": (cfg["embed_dim"], cfg["input_dim"]),
                  "text_head.0.weight": (cfg["text_dim"], cfg["text_dim"]),
                  "text_head.2.weight": (cfg["embed_dim"], cfg["text_dim"]),
                  "logit_scales": (3,)}
        for key, shape in shapes.items():
            if key not in tensors or tuple(tensors[key].shape) != shape:
                found = None if key not in tensors else tuple(tensors[key].shape)
                raise ValueError(f"{where!r}: tensor {key!r} is {found}, expected {shape}.")
        if "references.embeddings" in tensors:
            e, ll = tensors["references.embeddings"], tensors.get("references.latlon")
            if ll is None or e.ndim != 2 or e.shape[1] != cfg["input_dim"] or \
                    tuple(ll.shape) != (e.shape[0], 2):
                raise ValueError(f"{where!r}: the stored reference database is damaged.")

    @classmethod
    def load(cls, path: str | os.PathLike, *,  # type: ignore[override]
             device: str | torch.device | None = None, encoder: Any = None,
             text_encoder: Any = None) -> G3:
        """Load a checkpoint written by :meth:`save` (safetensors: no code execution).

        The reference database (embeddings and coordinates; texts and ids are not
        stored) comes back with the weights.

        Raises
        ------
        CheckpointNotFoundError
            No file at ``path``.
        ValueError
            Not a G3 checkpoint, or a damaged one (named).
        """
        tensors, cfg = read_checkpoint(path, fmt=cls.checkpoint_format, what=cls.model_name)
        cls.check_checkpoint(cfg, tensors, path)
        model = cls.from_checkpoint_config(cfg, encoder=encoder, text_encoder=text_encoder)
        model.load_checkpoint_tensors(tensors)
        model.eval()
        return model.to(device) if device is not None else model
