"""RowCache: rows a projection wrote, trusted only from the position it committed."""

from __future__ import annotations

from projections.cache import RowCache


def test_a_projection_at_zero_knows_its_tables_are_empty() -> None:
    cache: RowCache[str, int] = RowCache()
    cache.begin(0)
    assert cache.complete
    assert cache.missing(["a", "b"]) == []


def test_rows_survive_a_commit_and_nothing_else() -> None:
    cache: RowCache[str, int] = RowCache()
    cache.begin(0)
    cache.rows["a"] = 1
    cache.committed(10)
    cache.begin(10)  # the position this cache reached: still valid
    assert cache.rows == {"a": 1} and cache.complete
    cache.rows["b"] = 2  # ... a page rolled back: never committed
    cache.begin(10)
    assert cache.rows == {} and not cache.complete
    assert cache.missing(["a", "b", "a"]) == ["a", "b"]


def test_another_runner_moving_the_projection_empties_it() -> None:
    cache: RowCache[str, int] = RowCache()
    cache.begin(0)
    cache.rows["a"] = 1
    cache.committed(10)
    cache.begin(25)
    assert cache.rows == {} and cache.missing(["a"]) == ["a"]


def test_beyond_its_limit_it_starts_over_and_reads_misses() -> None:
    cache: RowCache[str, int] = RowCache(limit=2)
    cache.begin(0)
    cache.rows.update({"a": 1, "b": 2, "c": 3})
    cache.committed(5)
    cache.begin(5)
    assert cache.rows == {} and not cache.complete
    cache.rows["a"] = 1
    assert cache.missing(["a", "b"]) == ["b"]
