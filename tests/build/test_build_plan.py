import numpy as np
import pytest

from tfds_bigarrays._build.plan import (
    PlanError,
    block_ranges,
    check_dataset_name,
    make_plan,
    shard_ranges,
)


@pytest.mark.parametrize("name", ["../x", "My Data", "MyData", "a/b", "", "1abc", "x-y", None])
def test_invalid_dataset_names(name):
    with pytest.raises(PlanError, match="not a valid dataset name"):
        check_dataset_name(name)


def test_name_error_suggests_a_fix():
    with pytest.raises(PlanError, match="For example 'my_data'"):
        check_dataset_name("My Data")


@pytest.mark.parametrize(
    "n, frame, shard",
    [(1, 10, 1000), (1000, 10, 1000), (1001, 10, 1000), (7, 5000, 1000), (12345, 16, 4096)],
)
def test_shard_ranges_cover_every_row_once(n, frame, shard):
    ranges = shard_ranges(n, frame_bytes=frame, shard_bytes=shard)
    rows = [i for r in ranges for i in range(r.start, r.stop)]
    assert rows == list(range(n))
    assert all(len(r) >= 1 for r in ranges)
    per_shard = max(1, shard // frame)
    assert all(len(r) <= per_shard for r in ranges)
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1  # balanced


def test_shard_ranges_are_stable():
    # A fixed expectation: stored order and shard assignment must not drift.
    got = [(r.start, r.stop) for r in shard_ranges(10, frame_bytes=100, shard_bytes=300)]
    assert got == [(0, 2), (2, 5), (5, 7), (7, 10)]


def test_block_ranges():
    assert block_ranges(5, 17, frame_bytes=10, block_bytes=40) == [(5, 9), (9, 13), (13, 17)]


def test_plan_checks_lengths_specs_and_keys():
    x, y = np.zeros((10, 2)), np.zeros(9)
    with pytest.raises(PlanError, match=r"different numbers of examples: x=10 .*y=9"):
        make_plan({"train": {"x": x, "y": y}})
    with pytest.raises(PlanError, match="same feature names, dtypes and row shapes"):
        make_plan({"train": {"x": x}, "test": {"x": np.zeros((3, 3))}})
    with pytest.raises(PlanError, match="has no examples"):
        make_plan({"train": {"x": np.zeros((0, 2))}})
    with pytest.raises(PlanError, match="supervised_keys"):
        make_plan({"train": {"x": x}}, supervised_keys=("x", "label"))
    with pytest.raises(PlanError, match="split name 'all'"):
        make_plan({"all": {"x": x}})
    with pytest.raises(PlanError, match="non-empty mapping"):
        make_plan({})
    plan = make_plan(
        {"train": {"x": x, "y": y[:10] if len(y) == 10 else np.zeros(10)}},
        supervised_keys=["x", "y"],
        max_examples_per_split=4,
    )
    assert plan.splits["train"].num_examples == 4 and plan.supervised_keys == ("x", "y")
