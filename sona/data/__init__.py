"""Packaged real routing data: the measured outcomes of real LLMs on real queries.

``load_routerbench()`` returns the RouterBench subset described in ``DATA.md`` beside this file
(3,150 queries of ARC-Challenge, MBPP and Winogrande; the 0/1 quality and the $ cost of 11 LLMs on
each; two real sentence embeddings; RouterDC's train/test split). It ships inside the package, so
the real-data benchmark and ``sona demo`` work from an installed wheel with no download.

>>> from sona.data import load_routerbench
>>> data = load_routerbench("minilm")
>>> data.X.shape, data.quality.shape, len(data.routes)
((3150, 384), (3150, 11), 11)
>>> train = data.subset(data.is_train)
>>> train.n_queries
2205
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = ["RoutingData", "load_routerbench", "EMBEDDINGS"]

#: Embeddings stored for each query: name -> (array in the file, dimension).
EMBEDDINGS = {"minilm": ("X_minilm", 384), "wordllama": ("X_wordllama", 256)}


@dataclass(frozen=True)
class RoutingData:
    """Per-query outcomes of every route (full information), with query embeddings.

    Attributes
    ----------
    X : (n, d) float32 query embeddings (unit rows).
    quality : (n, K) float32, route k's measured quality on query i, in [0, 1].
    cost : (n, K) float32, what route k's call on query i cost (US dollars).
    task : (n,) int64, index into ``task_names``.
    task_names, routes : names of the tasks and of the K routes (column order).
    is_train : (n,) bool, the train split.
    embedding : which embedding ``X`` holds.
    """

    X: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    task: np.ndarray
    task_names: tuple
    routes: tuple
    is_train: np.ndarray
    embedding: str

    @property
    def n_queries(self) -> int:
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def subset(self, rows: np.ndarray) -> RoutingData:
        """The queries selected by ``rows`` (a boolean mask or integer indices), in that order."""
        rows = np.asarray(rows)
        return RoutingData(self.X[rows], self.quality[rows], self.cost[rows], self.task[rows],
                           self.task_names, self.routes, self.is_train[rows], self.embedding)

    def without_routes(self, names: Sequence[str]) -> RoutingData:
        """The same queries with the named routes' columns removed.

        Raises ValueError for a name that is not a route, or when fewer than 2 routes remain.
        """
        unknown = sorted(set(names) - set(self.routes))
        if unknown:
            raise ValueError(f"unknown routes {unknown}; routes are {list(self.routes)}")
        keep = [k for k, r in enumerate(self.routes) if r not in set(names)]
        if len(keep) < 2:
            raise ValueError(f"at least 2 routes must remain; {len(keep)} would")
        return RoutingData(self.X, self.quality[:, keep], self.cost[:, keep], self.task,
                           self.task_names, tuple(self.routes[k] for k in keep), self.is_train,
                           self.embedding)


def load_routerbench(embedding: str = "minilm") -> RoutingData:
    """The packaged RouterBench subset (see ``sona/data/DATA.md`` for provenance and licences).

    Parameters
    ----------
    embedding : ``"minilm"`` (all-MiniLM-L6-v2, 384-d) or ``"wordllama"`` (WordLlama, 256-d).

    Raises ValueError for another embedding name.
    """
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {sorted(EMBEDDINGS)}; got {embedding!r}")
    key, _ = EMBEDDINGS[embedding]
    with resources.files(__name__).joinpath("routerbench.npz").open("rb") as f:
        z = np.load(f, allow_pickle=False)
        return RoutingData(
            X=np.ascontiguousarray(z[key], dtype=np.float32),
            quality=np.ascontiguousarray(z["quality"], dtype=np.float32),
            cost=np.ascontiguousarray(z["cost"], dtype=np.float32),
            task=z["task"].astype(np.int64),
            task_names=tuple(str(s) for s in z["task_names"]),
            routes=tuple(str(s) for s in z["model_names"]),
            is_train=z["is_train"].astype(bool),
            embedding=embedding,
        )
