"""Geo-diversification: candidate generators behind one small protocol.

A generator proposes candidate locations for one query from its retrieved references::

    generate(query: Query, references: References, k: int) -> list[Candidate]

Three ship here:

:class:`RetrievalGenerator`
    Kernel modes (spherical mean shift) of the retrieved coordinates, weighted by
    retrieval similarity; one "prompt" per number of references (as in G3's prompt
    ensemble), offline and deterministic.
:class:`LocDiffGenerator`
    Samples of a :class:`~geodiffloc.LocDiff` conditioned on the query embedding.
:class:`OpenAIChatGenerator`
    Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama,
    LM Studio, ...), prompted as in the G3 paper: several prompts with different numbers
    of retrieved reference coordinates; free-text answers parsed by
    :func:`parse_coordinates`; a malformed answer or a failed request is skipped with a
    warning, never an exception.

A generator may also offer ``generate_batch(queries, references, k)`` (one list per
query) to work on all queries at once; :class:`~geodiffloc.models.g3.G3` uses it when
present.
"""

from __future__ import annotations

import base64
import json
import math
import mimetypes
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ...sphere import EARTH_RADIUS_KM, latlon_to_xyz, xyz_to_latlon

__all__ = [
    "DEFAULT_PROMPT",
    "Candidate",
    "CandidateGenerator",
    "LocDiffGenerator",
    "OpenAIChatGenerator",
    "Query",
    "References",
    "RetrievalGenerator",
    "parse_coordinates",
]


@dataclass
class Candidate:
    """A proposed location: ``lat``, ``lon`` (degrees), optional ``score`` and ``text``.

    ``prompt`` names the prompt / sample group that produced it (kept in outputs).
    """

    lat: float
    lon: float
    score: float | None = None
    text: str | None = None
    prompt: str | None = None


@dataclass
class Query:
    """One query as a generator sees it.

    Attributes
    ----------
    index
        Position of the query in the call.
    embedding
        ``(input_dim,)`` raw embedding (what the model's query head takes).
    text
        The raw input when it is a text, or an image path; ``None`` for embeddings.
    """

    index: int
    embedding: torch.Tensor
    text: str | None = None


@dataclass
class References:
    """The retrieved references of one query, most similar first.

    Attributes
    ----------
    latlon
        ``(m, 2)`` ``(lat, lon)`` degrees.
    similarity
        ``(m,)`` cosine similarities of the aligned query embeddings.
    texts
        Their descriptions, when the database has them.
    """

    latlon: np.ndarray
    similarity: np.ndarray
    texts: list[str] | None = None

    def __len__(self) -> int:
        return int(self.latlon.shape[0])


@runtime_checkable
class CandidateGenerator(Protocol):
    """The generator protocol (see the module notes)."""

    name: str

    def generate(self, query: Query, references: References, k: int) -> list[Candidate]:
        """Up to ``k`` candidates for one query."""
        ...


# -- retrieval modes ------------------------------------------------------------------
def _mean_shift(xyz: np.ndarray, w: np.ndarray, kappa: float, iters: int = 30,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Spherical mean shift (vMF kernel) started from every point; modes and densities."""
    modes = xyz.copy()
    for _ in range(iters):
        kw = w[None, :] * np.exp(kappa * (modes @ xyz.T - 1.0))  # (m, m)
        new = kw @ xyz
        new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-300)
        done = np.max(np.abs(new - modes)) < 1e-9
        modes = new
        if done:
            break
    dens = (w[None, :] * np.exp(kappa * (modes @ xyz.T - 1.0))).sum(axis=1)
    return modes, dens


def _merge(modes: np.ndarray, dens: np.ndarray, min_sep_km: float) -> list[int]:
    """Indices of distinct modes, densest first (greedy, ``min_sep_km`` apart)."""
    keep: list[int] = []
    cos_sep = math.cos(min_sep_km / EARTH_RADIUS_KM)
    for i in np.argsort(-dens, kind="stable"):
        if all(float(modes[i] @ modes[j]) < cos_sep for j in keep):
            keep.append(int(i))
    return keep


class RetrievalGenerator:
    """Kernel modes of the retrieved coordinates (an offline stand-in for the LMM).

    For each number of references ``r`` in ``ref_counts`` (a "prompt"), the top ``r``
    references' coordinates are smoothed with a von Mises-Fisher kernel of scale
    ``bandwidth_km`` weighted by ``softmax(similarity / temperature)``; spherical mean
    shift from every reference finds the modes; the ``k`` densest distinct modes (at
    least ``bandwidth_km`` apart) are that prompt's candidates.

    Parameters
    ----------
    bandwidth_km
        Kernel scale.
    ref_counts
        References per prompt (G3's prompt ensemble).
    temperature
        Softmax temperature of the similarity weights.

    Examples
    --------
    >>> refs = References(np.array([[48.8, 2.3], [48.9, 2.4], [40.7, -74.0]]),
    ...                   np.array([0.9, 0.8, 0.1]))
    >>> c = RetrievalGenerator(ref_counts=(3,)).generate(Query(0, torch.zeros(2)), refs, 1)
    >>> round(c[0].lat), round(c[0].lon)
    (49, 2)
    """

    name = "retrieval"

    def __init__(self, bandwidth_km: float = 100.0, ref_counts: Sequence[int] = (5, 10, 20),
                 temperature: float = 0.05) -> None:
        if not (math.isfinite(float(bandwidth_km)) and float(bandwidth_km) > 0):
            raise ValueError(f"bandwidth_km must be a positive distance; got {bandwidth_km!r}.")
        if not ref_counts or any(int(r) < 1 for r in ref_counts):
            raise ValueError(f"ref_counts must be positive integers; got {ref_counts!r}.")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0; got {temperature!r}.")
        self.bandwidth_km = float(bandwidth_km)
        self.ref_counts = tuple(int(r) for r in ref_counts)
        self.temperature = float(temperature)

    def generate(self, query: Query, references: References, k: int) -> list[Candidate]:
        if len(references) == 0 or k < 1:
            return []
        kappa = 1.0 / (self.bandwidth_km / EARTH_RADIUS_KM) ** 2
        out: list[Candidate] = []
        for r in self.ref_counts:
            m = min(r, len(references))
            ll = torch.as_tensor(references.latlon[:m], dtype=torch.float64)
            xyz = latlon_to_xyz(ll).numpy()
            s = np.asarray(references.similarity[:m], dtype=np.float64) / self.temperature
            w = np.exp(s - s.max())
            w /= w.sum()
            modes, dens = _mean_shift(xyz, w, kappa)
            keep = _merge(modes, dens, self.bandwidth_km)[:k]
            ll_m = xyz_to_latlon(torch.from_numpy(modes[keep])).numpy()
            for (la, lo), d in zip(ll_m, dens[keep]):
                out.append(Candidate(float(la), float(lo), score=float(d), prompt=f"top{r}"))
        return out


# -- LocDiff --------------------------------------------------------------------------
class LocDiffGenerator:
    """Samples of a LocDiff conditioned on the query: ``k`` locations per query.

    Parameters
    ----------
    locdiff
        A trained :class:`~geodiffloc.LocDiff` whose condition is the query embedding
        (same encoder and width as G3's queries).
    sampler, steps, seed
        Sampling options (see :meth:`LocDiff.sample_locations`); the seed makes
        candidates reproducible.

    Raises
    ------
    ValueError
        A LocDiff whose condition width differs from the queries' (when generating).
    """

    name = "locdiff"

    def __init__(self, locdiff: Any, *, sampler: str = "dpm++", steps: int | None = 10,
                 seed: int = 0) -> None:
        self.locdiff, self.sampler, self.steps, self.seed = locdiff, sampler, steps, int(seed)

    def generate(self, query: Query, references: References, k: int) -> list[Candidate]:
        return self.generate_batch([query], [references], k)[0]

    @torch.no_grad()
    def generate_batch(self, queries: Sequence[Query], references: Sequence[References],
                       k: int) -> list[list[Candidate]]:
        if not queries or k < 1:
            return [[] for _ in queries]
        cond = torch.stack([q.embedding.float().cpu() for q in queries])
        if cond.shape[1] != self.locdiff.cond_dim:
            raise ValueError(f"the LocDiff takes {self.locdiff.cond_dim}-d conditions but the "
                             f"queries are {cond.shape[1]}-d; train it on the same embeddings.")
        dev = self.locdiff.device
        _, ll = self.locdiff.sample_locations(
            cond.to(dev), n_views=int(k), sampler=self.sampler, steps=self.steps,
            generator=torch.Generator().manual_seed(self.seed))
        return [[Candidate(float(a), float(b), prompt="sample") for a, b in row.tolist()]
                for row in ll]


# -- free-text coordinates --------------------------------------------------------------
_NUM = r"[-+−]?\d{1,3}(?:\.\d+)?"
_JSON_PAIR = re.compile(
    r"[\"']?(?:lat|latitude)[\"']?\s*[:=]\s*(" + _NUM + r")\s*(°)?\s*([NS])?[\s,;]*"
    r"[\"']?(?:lon|lng|long|longitude)[\"']?\s*[:=]\s*(" + _NUM + r")\s*(°)?\s*([EW])?",
    re.IGNORECASE)
_HEMI_PAIR = re.compile(
    r"(" + _NUM + r")\s*°?\s*([NS])\b[\s,;/]*(" + _NUM + r")\s*°?\s*([EW])\b", re.IGNORECASE)
_PLAIN_PAIR = re.compile(r"[(\[]\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*[)\]]")


def _num(s: str) -> float:
    return float(s.replace("−", "-"))


def parse_coordinates(text: str) -> list[tuple[float, float]]:
    """All ``(lat, lon)`` pairs found in a free-text answer, in order, invalid ones dropped.

    Understands JSON-ish ``{"latitude": 48.85, "longitude": 2.35}`` (and ``lat``/``lon``/
    ``lng`` keys, ``:`` or ``=``), hemisphere notation ``48.85° N, 2.35° E`` and bracketed
    pairs ``(48.85, 2.35)`` / ``[48.85, 2.35]``. A pair with ``|lat| > 90`` or
    ``|lon| > 180`` is dropped; never raises on any string.

    Examples
    --------
    >>> parse_coordinates('{"latitude": 48.85, "longitude": 2.35}')
    [(48.85, 2.35)]
    >>> parse_coordinates("Probably Sydney, 33.87° S, 151.21° E, or (35.68, 139.69).")
    [(-33.87, 151.21), (35.68, 139.69)]
    >>> parse_coordinates("no idea")
    []
    """
    if not isinstance(text, str):
        return []
    found: list[tuple[int, float, float]] = []
    spans: list[tuple[int, int]] = []

    def add(pos: tuple[int, int], lat: float, lon: float) -> None:
        if any(a < pos[1] and pos[0] < b for a, b in spans):
            return  # inside a pair already read
        spans.append(pos)
        if math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180:
            found.append((pos[0], lat, lon))

    for m in _JSON_PAIR.finditer(text):
        lat, lon = _num(m.group(1)), _num(m.group(4))
        if (m.group(3) or "").upper() == "S":
            lat = -abs(lat)
        if (m.group(6) or "").upper() == "W":
            lon = -abs(lon)
        add(m.span(), lat, lon)
    for m in _HEMI_PAIR.finditer(text):
        lat, lon = abs(_num(m.group(1))), abs(_num(m.group(3)))
        add(m.span(), -lat if m.group(2).upper() == "S" else lat,
            -lon if m.group(4).upper() == "W" else lon)
    for m in _PLAIN_PAIR.finditer(text):
        add(m.span(), _num(m.group(1)), _num(m.group(2)))
    return [(la, lo) for _, la, lo in sorted(found)]


# -- OpenAI-compatible chat -------------------------------------------------------------
#: The G3 prompt (paper, Fig. 2), for an image or a text query; ``{references}`` is
#: filled with retrieved coordinates when a prompt has any.
DEFAULT_PROMPT = (
    "Suppose you are an expert in geo-localization. Please analyze {subject} and give me "
    "{k} guesses of the location where it was taken, from the most to the least likely."
    "{references} Answer with one JSON object per guess, in the format "
    '{{"latitude": float, "longitude": float}}, and nothing else.'
)


@dataclass
class _ChatResult:
    text: str | None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class OpenAIChatGenerator:
    """Candidates from any OpenAI-compatible chat endpoint, with G3's prompt ensemble.

    For each number of references ``r`` in ``ref_counts`` one prompt is sent: the query
    (its text, or the image as a data URL when the query is an image file path) and the
    coordinates of its ``r`` most similar references ("For your reference, these are
    the coordinates of some similar places: ..."); each answer's coordinates
    (:func:`parse_coordinates`) are that prompt's candidates. ``ref_counts`` with a 0
    gives a prompt without retrieval (the LMM's own knowledge).

    Parameters
    ----------
    base_url
        The API root, e.g. ``"https://api.openai.com/v1"`` or ``"http://localhost:8000/v1"``
        (``/chat/completions`` is appended).
    model
        The model name the endpoint serves.
    api_key_env
        Environment variable holding the key (sent as ``Authorization: Bearer``); unset:
        no header (local servers).
    ref_counts
        References per prompt.
    timeout_s, max_retries, backoff_s
        Per-request timeout; retries on timeouts, connection errors, HTTP 429 and 5xx,
        with exponential back-off.
    temperature, max_tokens
        Sampling options sent with each request.
    prompt
        Template with ``{subject}``, ``{k}``, ``{references}``.

    Notes
    -----
    A request that still fails after the retries, or an answer without usable
    coordinates, is skipped with a :class:`UserWarning` (the query keeps its other
    candidates); nothing raises. No test needs a real endpoint.
    """

    name = "openai-chat"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 ref_counts: Sequence[int] = (0, 5, 10, 15), timeout_s: float = 60.0,
                 max_retries: int = 2, backoff_s: float = 1.0, temperature: float = 0.7,
                 max_tokens: int = 300, prompt: str = DEFAULT_PROMPT) -> None:
        if not str(base_url).startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL; got {base_url!r}.")
        if not ref_counts or any(int(r) < 0 for r in ref_counts):
            raise ValueError(f"ref_counts must be integers >= 0; got {ref_counts!r}.")
        if not float(timeout_s) > 0 or int(max_retries) < 0:
            raise ValueError("timeout_s must be > 0 and max_retries >= 0.")
        self.url = str(base_url).rstrip("/") + "/chat/completions"
        self.model = str(model)
        self.api_key_env = api_key_env
        self.ref_counts = tuple(int(r) for r in ref_counts)
        self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)
        self.backoff_s = float(backoff_s)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.prompt = prompt

    def _messages(self, query: Query, references: References, r: int, k: int,
                  ) -> list[dict[str, Any]]:
        refs = ""
        if r > 0 and len(references):
            pts = ", ".join(f"({la:.4f}, {lo:.4f})" for la, lo in references.latlon[:r])
            refs = f" For your reference, these are the coordinates of some similar places: {pts}."
        text = query.text
        image = text is not None and Path(text).suffix.lower() in (
            ".jpg", ".jpeg", ".png", ".webp", ".gif") and Path(text).is_file()
        subject = "this image" if image else (f'this description: "{text}"' if text
                                              else "this place")
        content: Any = self.prompt.format(subject=subject, k=int(k), references=refs)
        if image:
            mime = mimetypes.guess_type(str(text))[0] or "image/jpeg"
            data = base64.b64encode(Path(str(text)).read_bytes()).decode("ascii")
            content = [{"type": "text", "text": content},
                       {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}]
        return [{"role": "user", "content": content}]

    def _post(self, messages: list[dict[str, Any]]) -> _ChatResult:
        body = json.dumps({"model": self.model, "messages": messages,
                           "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    payload = json.loads(resp.read().decode("utf-8", "replace"))
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code == 429 or e.code >= 500:
                    continue
                return _ChatResult(None, last)
            except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                return _ChatResult(None, f"unreadable response ({e})")
            try:
                text = payload["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                return _ChatResult(None, "a response without choices[0].message.content")
            if isinstance(text, list):  # content parts
                text = " ".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
            return _ChatResult(str(text))
        return _ChatResult(None, f"gave up after {self.max_retries + 1} attempt(s): {last}")

    def generate(self, query: Query, references: References, k: int) -> list[Candidate]:
        out: list[Candidate] = []
        for r in self.ref_counts:
            res = self._post(self._messages(query, references, r, k))
            tag = f"rag{r}"
            if res.text is None:
                warnings.warn(f"{self.name}: query {query.index}, prompt {tag}: {res.error}; "
                              "skipped.", UserWarning, stacklevel=2)
                continue
            pairs = parse_coordinates(res.text)[: int(k)]
            if not pairs:
                snippet = res.text.strip().replace("\n", " ")[:80]
                warnings.warn(f"{self.name}: query {query.index}, prompt {tag}: no coordinates "
                              f"in the answer {snippet!r}; skipped.", UserWarning, stacklevel=2)
                continue
            out += [Candidate(la, lo, text=res.text, prompt=tag) for la, lo in pairs]
        return out
