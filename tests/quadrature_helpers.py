"""Reference quadratures on the sphere written with numpy alone (no harmonics of ours):
shared by the SHDD and log-partition tests."""

from __future__ import annotations

import math

import numpy as np
import torch


def unit(lat, lon):
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)


def to_latlon(xyz):
    return np.degrees(np.stack([np.arctan2(xyz[..., 2], np.hypot(xyz[..., 0], xyz[..., 1])),
                                np.arctan2(xyz[..., 1], xyz[..., 0])], -1))


def polar_quadrature(center, segments, n_psi):
    """Nodes/weights of a polar grid around ``center``: Gauss-Legendre in the angular
    distance over each ``(a, b, n)`` segment, uniform in azimuth."""
    c = unit(*center)
    ref = np.array([1.0, 0, 0]) if abs(c[2]) > 0.9 else np.array([0, 0, 1.0])
    e1 = np.cross(ref, c)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(c, e1)
    psi = np.arange(n_psi) * 2 * math.pi / n_psi
    pts, wts = [], []
    for a, b, n in segments:
        x, w = np.polynomial.legendre.leggauss(n)
        g = 0.5 * (b - a) * x + 0.5 * (a + b)
        wg = 0.5 * (b - a) * w * np.sin(g)
        G, P = np.meshgrid(g, psi, indexing="ij")
        xyz = (np.cos(G)[..., None] * c + np.sin(G)[..., None]
               * (np.cos(P)[..., None] * e1 + np.sin(P)[..., None] * e2))
        pts.append(to_latlon(xyz).reshape(-1, 2))
        wts.append(np.repeat(wg, n_psi) * (2 * math.pi / n_psi))
    return torch.from_numpy(np.concatenate(pts)), np.concatenate(wts)
