"""Per-point input features for IAM-OnDB (paper section IV-B; Graves et al. 2009 style).

For point p of a line (points in writing order, strokes concatenated):

    dx, dy    offset from the previous point in board units (0 at the first point of the line;
              the first point of a stroke gets the pen-up jump from the previous stroke's end)
    pen_lift  1 at the last point of each stroke (the pen lifts after it), 0 elsewhere
    time      seconds since the start of the point's stroke

Every point is kept (no subsampling: that the paper halved each sequence is recalled, unconfirmed).
The four features are then z-normalised with the training split's mean and standard deviation
(`fit_normaliser`), stored in the prepared data's meta.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("dx", "dy", "pen_lift", "time")


def point_features(points: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """`points (P, 3)` x, y, time and `stroke (P,)` stroke index -> features `(P, 4)` float32."""
    if len(points) == 0:
        raise ValueError("a line needs at least one point")
    feats = np.zeros((len(points), 4), dtype=np.float64)
    feats[1:, :2] = np.diff(points[:, :2], axis=0)
    last = np.ones(len(points), dtype=bool)
    last[:-1] = stroke[1:] != stroke[:-1]  # the next point starts another stroke
    feats[:, 2] = last
    first = np.ones(len(points), dtype=bool)
    first[1:] = stroke[1:] != stroke[:-1]
    start_index = np.maximum.accumulate(np.where(first, np.arange(len(points)), 0))
    feats[:, 3] = points[:, 2] - points[start_index, 2]
    return feats.astype(np.float32)


def fit_normaliser(feats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation `(4,)` over all points of a split (std 0 -> 1)."""
    allf = np.concatenate(feats).astype(np.float64)
    mean, std = allf.mean(axis=0), allf.std(axis=0)
    std[std == 0] = 1.0
    return mean, std


def apply_normaliser(feats: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((feats - mean) / std).astype(np.float32)
