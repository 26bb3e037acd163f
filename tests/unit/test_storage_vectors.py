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
            (1, "a", "ann", 10.0, unit(1, 0, 0)),
            (2, "b", "ann", 20.0, unit(0.9, 0.1, 0)),
            (3, "a", "ann", 30.0, unit(0, 1, 0)),
            (4, "b", "ann", 40.0, unit(0, 0, 1)),
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
    index.upsert([(7, "s", "ann", 1.0, unit(1, 0))])
    index.upsert([(7, "t", "ann", 2.0, unit(0, 1))])
    assert len(index) == 1
    assert index.search(unit(0, 1), 1, session_id="t") == [(7, 1.0)]


def test_empty_index() -> None:
    assert VectorIndex(dim=4).search(unit(1, 0, 0, 0), 3) == []


def test_learner_filter_applies_before_ranking() -> None:
    index = VectorIndex(dim=2)
    # Bob has many rows right on the query; Ann's two are far from it.
    index.upsert([(i, "sb", "bob", 1.0, unit(1, 0.01 * i)) for i in range(1, 101)])
    index.upsert([(201, "sa", "ann", 1.0, unit(0, 1)), (202, "sa", "ann", 1.0, unit(0.2, 1))])
    hits = index.search(unit(1, 0), 5, learner_id="ann")
    assert [cid for cid, _ in hits] == [202, 201]
    assert index.search(unit(1, 0), 5, learner_id="nobody") == []
    assert len(index.search(unit(1, 0), 5, learner_id="bob", session_id="sa")) == 0


def test_remove_drops_rows_and_keeps_the_rest_findable() -> None:
    index = VectorIndex(dim=2, capacity=2)
    index.upsert([(i, f"s{i % 2}", f"l{i % 3}", float(i), unit(1, i)) for i in range(1, 8)])
    assert index.remove([1, 4, 7, 99]) == 3  # 99 was never there
    assert len(index) == 4
    remaining = {cid for cid, _ in index.search(unit(1, 0), 10)}
    assert remaining == {2, 3, 5, 6}
    # Rows moved into the gaps keep their own filters.
    assert {cid for cid, _ in index.search(unit(1, 0), 10, learner_id="l2")} == {2, 5}
    assert {cid for cid, _ in index.search(unit(1, 0), 10, session_id="s0")} == {2, 6}
    index.upsert([(4, "s0", "l1", 4.0, unit(1, 4))])  # an id can come back
    assert {cid for cid, _ in index.search(unit(1, 0), 10, learner_id="l1")} == {4}
