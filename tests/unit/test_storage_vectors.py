"""VectorIndex: exact cosine top-k with filters, upserts and growth."""

from __future__ import annotations

import numpy as np

from server.storage.vectors import VectorIndex


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_top_k_by_cosine_with_filters_and_growth() -> None:
    index = VectorIndex(dim=3, capacity=2)  # grows past its first capacity
    index.upsert(
        [
            (1, "a", 10.0, unit(1, 0, 0)),
            (2, "b", 20.0, unit(0.9, 0.1, 0)),
            (3, "a", 30.0, unit(0, 1, 0)),
            (4, "b", 40.0, unit(0, 0, 1)),
        ]
    )
    assert len(index) == 4
    q = unit(1, 0, 0)
    assert [cid for cid, _ in index.search(q, 2)] == [1, 2]
    assert [cid for cid, _ in index.search(q, 10, session_id="b")] == [2, 4]
    assert [cid for cid, _ in index.search(q, 10, since=25.0)] == [3, 4]
    assert [cid for cid, _ in index.search(q, 10, until=15.0)] == [1]
    assert index.search(q, 5, session_id="nobody") == []
    sims = dict(index.search(q, 4))
    assert abs(sims[1] - 1.0) < 1e-6 and abs(sims[3]) < 1e-6


def test_upsert_replaces_by_id() -> None:
    index = VectorIndex(dim=2)
    index.upsert([(7, "s", 1.0, unit(1, 0))])
    index.upsert([(7, "t", 2.0, unit(0, 1))])
    assert len(index) == 1
    assert index.search(unit(0, 1), 1, session_id="t") == [(7, 1.0)]


def test_empty_index() -> None:
    assert VectorIndex(dim=4).search(unit(1, 0, 0, 0), 3) == []
