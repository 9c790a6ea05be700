"""G3's geo-alignment loss: a weighted sum of pairwise InfoNCE terms over three modalities.

For a batch of ``B`` items with L2-normalised query embeddings ``q_i`` (image, caption,
any encoder's embedding through the query head), description embeddings ``t_i`` (the
place's MP16-Pro-style text through the text head) and location embeddings ``g_i``
(GPS through GeoCLIP's location encoder), plus ``S`` location embeddings ``n_j`` of the
GPS queue (negatives only):

.. math::

    L_{qg} &= -\\frac1B \\sum_i \\log \\frac{e^{s_{qg} q_i\\cdot g_i}}
             {\\sum_k e^{s_{qg} q_i\\cdot g_k} + \\sum_j e^{s_{qg} q_i\\cdot n_j}} \\\\
    L_{qt} &= \\frac12\\Big(\\mathrm{CE}(s_{qt} Q T^\\top)
             + \\mathrm{CE}(s_{qt} T Q^\\top)\\Big) \\\\
    L_{tg} &= -\\frac1B \\sum_i \\log \\frac{e^{s_{tg} t_i\\cdot g_i}}
             {\\sum_k e^{s_{tg} t_i\\cdot g_k} + \\sum_j e^{s_{tg} t_i\\cdot n_j}} \\\\
    L &= w_{qg} L_{qg} + w_{qt} L_{qt} + w_{tg} L_{tg}

``L_qg`` is GeoCLIP's loss (eq. 4, with the queue), ``L_qt`` CLIP's symmetric in-batch
loss; ``s = exp(logit_scale)`` clamped at 100, one learnable scale per pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["alignment_loss", "info_nce"]


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, *,
             symmetric: bool = False) -> torch.Tensor:
    """InfoNCE of ``a`` (``B`` rows) against ``b`` (``B`` positives first, then negatives).

    Rows are L2-normalised here. ``symmetric``: the mean of both directions (needs ``b``
    to have exactly ``B`` rows).

    Examples
    --------
    >>> x = torch.eye(3)
    >>> float(info_nce(x, x, torch.tensor(4.6))) < 0.05
    True
    """
    n = a.shape[0]
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or b.shape[0] < n:
        raise ValueError(f"need a (B, d) and b (B + S, d) with the same d; got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}.")
    scale = logit_scale.exp().clamp(max=100.0)
    logits = scale * F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    target = torch.arange(n, device=logits.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        if b.shape[0] != n:
            raise ValueError("a symmetric InfoNCE needs as many rows in b as in a.")
        loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
    return loss


def alignment_loss(
    query: torch.Tensor, text: torch.Tensor, gps: torch.Tensor, queue: torch.Tensor | None,
    scales: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    weights: tuple[float, float, float] = (1.0, 1.0, 0.0),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The geo-alignment loss ``w_qg L_qg + w_qt L_qt + w_tg L_tg`` (module docstring).

    Parameters
    ----------
    query, text, gps
        ``(B, d)`` embeddings of the same ``B`` items (normalised here).
    queue
        ``(S, d)`` location embeddings of the GPS queue (negatives), or ``None``.
    scales
        Log logit scales of the (query, GPS), (query, text), (text, GPS) pairs.
    weights
        ``(w_qg, w_qt, w_tg)``; a zero weight skips its term.

    Returns
    -------
    (loss, parts)
        ``parts``: the unweighted ``qg``, ``qt``, ``tg`` terms (detached; 0 if skipped).

    Examples
    --------
    >>> x = torch.eye(4)
    >>> s = torch.tensor(4.6)
    >>> loss, parts = alignment_loss(x, x, x, None, (s, s, s), (1.0, 1.0, 1.0))
    >>> sorted(parts), bool(loss < 0.2)
    (['qg', 'qt', 'tg'], True)
    """
    if not (query.shape == text.shape == gps.shape):
        raise ValueError(f"query, text and gps embeddings must have one shape; got "
                         f"{tuple(query.shape)}, {tuple(text.shape)}, {tuple(gps.shape)}.")
    locs = gps if queue is None or queue.shape[0] == 0 else torch.cat([gps, queue])
    zero = query.sum() * 0.0
    w_qg, w_qt, w_tg = (float(w) for w in weights)
    qg = info_nce(query, locs, scales[0]) if w_qg else zero
    qt = info_nce(query, text, scales[1], symmetric=True) if w_qt else zero
    tg = info_nce(text, locs, scales[2]) if w_tg else zero
    loss = w_qg * qg + w_qt * qt + w_tg * tg
    return loss, {"qg": qg.detach(), "qt": qt.detach(), "tg": tg.detach()}
