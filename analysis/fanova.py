"""Functional ANOVA on a random forest (Hutter, Hoos & Leyton-Brown, ICML 2014; reference sect. 6).

The algorithm of `automl/fanova`, vectorised with NumPy over scikit-learn's trees. Why not the
`fanova` package itself: version 2.0.19 (the latest) uses `np.float`, removed in NumPy 1.24, and
its Python loop over every grid cell of every tree makes the six pairwise terms take about 1.6 s
per tree on 2,000 trials (about 17 minutes for one task with 100 trees). The forest settings
follow pyrfr's defaults as `fanova` uses them: bootstrapping, 70 % of the features tried per
split, fully grown trees (max depth 64).

Per tree: the leaves are axis-aligned boxes with constant predictions. Under the uniform measure
on the search box, the marginal prediction over a subset U of features is constant on the grid
cells spanned by the tree's split values in U, and equals sum_leaves value * [cell in leaf] *
prod_{k not in U} (leaf width_k / box width_k). Its variance over the cells is V_U (total);
subtracting the lower-order terms gives the individual effect. Fractions V_U / V are computed per
tree, then averaged (mean and standard deviation across trees), as in the paper's pie charts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestRegressor


@dataclass(frozen=True)
class LeafBoxes:
    """One tree as its leaves: `lo`, `hi` (L, D) clipped to the box, `value` (L,)."""

    lo: np.ndarray
    hi: np.ndarray
    value: np.ndarray


def leaf_boxes(tree, bounds: np.ndarray) -> LeafBoxes:
    """The leaves of a fitted sklearn tree (`estimator.tree_`) as boxes inside `bounds` (D, 2)."""
    left, right = tree.children_left, tree.children_right
    feature, threshold = tree.feature, tree.threshold
    los, his, values = [], [], []
    stack = [(0, bounds[:, 0].copy(), bounds[:, 1].copy())]
    while stack:
        node, lo, hi = stack.pop()
        if left[node] < 0:  # leaf
            los.append(lo)
            his.append(hi)
            values.append(float(tree.value[node].reshape(-1)[0]))
            continue
        f, t = feature[node], threshold[node]
        t = min(max(t, lo[f]), hi[f])  # a split outside the box leaves an empty child
        hi_left = hi.copy()
        hi_left[f] = t
        lo_right = lo.copy()
        lo_right[f] = t
        stack.append((left[node], lo, hi_left))  # sklearn: x <= threshold goes left
        stack.append((right[node], lo_right, hi))
    return LeafBoxes(np.array(los), np.array(his), np.array(values))


class TreeAnova:
    """Exact functional ANOVA of one tree under the uniform measure on `bounds`."""

    def __init__(self, boxes: LeafBoxes, bounds: np.ndarray):
        width = bounds[:, 1] - bounds[:, 0]
        self.boxes, self.bounds = boxes, bounds
        self.frac = (boxes.hi - boxes.lo) / width  # (L, D) share of each box side
        self.weight = np.prod(self.frac, axis=1)  # (L,) share of the volume
        self.mean = float(np.sum(self.weight * boxes.value))
        self.variance = float(np.sum(self.weight * (boxes.value - self.mean) ** 2))
        self._cells: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def cells(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Grid cells of feature d: (L, C) leaf-contains-cell indicator and (C,) cell shares."""
        if d not in self._cells:
            edges = np.unique(np.concatenate([self.boxes.lo[:, d], self.boxes.hi[:, d]]))
            sizes = np.diff(edges) / (self.bounds[d, 1] - self.bounds[d, 0])
            keep = sizes > 0
            mids = (0.5 * (edges[1:] + edges[:-1]))[keep]
            inside = (self.boxes.lo[:, [d]] < mids) & (mids < self.boxes.hi[:, [d]])
            self._cells[d] = (inside.astype(float), sizes[keep])
        return self._cells[d]

    def _other_weight(self, dims: tuple[int, ...]) -> np.ndarray:
        return self.boxes.value * np.prod(np.delete(self.frac, dims, axis=1), axis=1)

    def marginal_variance(self, dims: tuple[int, ...]) -> float:
        """Variance of the marginal prediction over the features `dims` (one or two)."""
        w = self._other_weight(dims)
        if len(dims) == 1:
            a, s = self.cells(dims[0])
            m = a.T @ w  # (C,)
            return float(np.sum(s * (m - self.mean) ** 2))
        if len(dims) == 2:
            (a, s), (b, r) = self.cells(dims[0]), self.cells(dims[1])
            m = a.T @ (w[:, None] * b)  # (Ci, Cj)
            return float(np.sum(np.outer(s, r) * (m - self.mean) ** 2))
        raise ValueError(f"marginals of 1 or 2 features are supported, got {len(dims)}")

    def marginal_at(self, dims: tuple[int, ...], grids: list[np.ndarray]) -> np.ndarray:
        """The marginal prediction at grid points: (G,) for one feature, (G1, G2) for two."""
        w = self._other_weight(dims)
        ind = []
        for d, g in zip(dims, grids, strict=True):
            lo = np.where(self.boxes.lo[:, d] <= self.bounds[d, 0], -np.inf, self.boxes.lo[:, d])
            hi = np.where(self.boxes.hi[:, d] >= self.bounds[d, 1], np.inf, self.boxes.hi[:, d])
            ind.append(((lo[:, None] < g) & (g <= hi[:, None])).astype(float))  # (L, G)
        if len(dims) == 1:
            return ind[0].T @ w
        return ind[0].T @ (w[:, None] * ind[1])


@dataclass
class Fanova:
    """A fitted forest and its per-tree ANOVAs; `names` label the D features."""

    names: list[str]
    bounds: np.ndarray
    trees: list[TreeAnova]

    def _fractions(self, dims: tuple[int, ...], cache: dict) -> np.ndarray:
        """Per-tree individual variance fractions of the effect `dims` (NaN for flat trees)."""
        if dims in cache:
            return cache[dims]
        out = np.full(len(self.trees), np.nan)
        for i, tree in enumerate(self.trees):
            if tree.variance <= 0:
                continue
            v = tree.marginal_variance(dims)
            for sub in (s for k in range(1, len(dims)) for s in itertools.combinations(dims, k)):
                v -= self._fractions(sub, cache)[i] * tree.variance
            out[i] = max(v, 0.0) / tree.variance
        cache[dims] = out
        return out

    def importances(self) -> list[dict]:
        """Rows {effect, kind, fraction, std}: 4 mains, 6 pairs and 'higher order' = 1 - sum."""
        cache: dict = {}
        d = len(self.names)
        rows, total = [], np.zeros(len(self.trees))
        effects = [(i,) for i in range(d)] + list(itertools.combinations(range(d), 2))
        for dims in effects:
            f = self._fractions(dims, cache)
            total = total + f
            rows.append(
                {
                    "effect": " x ".join(self.names[i] for i in dims),
                    "kind": "main" if len(dims) == 1 else "pairwise",
                    "fraction": float(np.nanmean(f)),
                    "std": float(np.nanstd(f)),
                }
            )
        rest = 1.0 - total
        rows.append(
            {
                "effect": "higher order",
                "kind": "higher order",
                "fraction": float(np.nanmean(rest)),
                "std": float(np.nanstd(rest)),
            }
        )
        return rows

    def curve(self, d: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Marginal prediction of feature d on `grid`: mean and std across trees."""
        values = np.stack([t.marginal_at((d,), [grid]) for t in self.trees])
        return values.mean(axis=0), values.std(axis=0)

    def surface(self, d1: int, d2: int, g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        """Mean over trees of the pairwise marginal on the grid (len(g1), len(g2))."""
        return np.mean([t.marginal_at((d1, d2), [g1, g2]) for t in self.trees], axis=0)


def fit(
    x: np.ndarray,
    y: np.ndarray,
    bounds: np.ndarray,
    names: list[str],
    n_trees: int = 100,
    seed: int = 0,
) -> Fanova:
    """Fit the forest on (x (N, D), y (N,)) inside `bounds` (D, 2) and decompose every tree."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    bounds = np.asarray(bounds, float)
    if x.ndim != 2 or x.shape[1] != len(bounds) or len(names) != len(bounds):
        raise ValueError(f"x {x.shape}, bounds {bounds.shape} and {len(names)} names disagree")
    if np.any(bounds[:, 1] <= bounds[:, 0]):
        raise ValueError(f"every bound needs lower < upper, got {bounds.tolist()}")
    if np.any(x < bounds[:, 0]) or np.any(x > bounds[:, 1]):
        raise ValueError("some samples lie outside the given bounds")
    forest = RandomForestRegressor(
        n_estimators=n_trees,
        max_features=0.7,
        bootstrap=True,
        max_depth=64,
        min_samples_split=2,
        min_samples_leaf=1,
        random_state=seed,
        n_jobs=1,
    )
    forest.fit(x, y)
    trees = [TreeAnova(leaf_boxes(e.tree_, bounds), bounds) for e in forest.estimators_]
    return Fanova(list(names), bounds, trees)
