import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_bigarrays as tb
from tfds_bigarrays._format.permutation import Permutation


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 1000, 4097])
@pytest.mark.parametrize("seed", [0, 1, 2**40])
def test_is_a_bijection(n, seed):
    perm = Permutation(n=n, seed=seed)
    assert sorted(perm(np.arange(n)).tolist()) == list(range(n))


def test_is_stable_and_keyed():
    # Fixed expectation: stored order of permuted datasets must never drift.
    assert Permutation(n=10, seed=7)(np.arange(10)).tolist() == [9, 0, 5, 2, 1, 8, 4, 3, 6, 7]
    a = Permutation(n=10_000, seed=1)(np.arange(10_000))
    b = Permutation(n=10_000, seed=2)(np.arange(10_000))
    assert not np.array_equal(a, b)
    assert abs(np.corrcoef(np.arange(10_000), a)[0, 1]) < 0.05


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seed=-1"):
        Permutation(n=3, seed=-1)
    with pytest.raises(ValueError, match="indices must be < n=3"):
        Permutation(n=3, seed=0)(np.array([3]))


def test_permuted_build_stores_rows_in_permuted_order(tmp_path):
    x = np.arange(3000, dtype=np.int32)
    np.save(tmp_path / "x.npy", x)
    tb.build(
        "perm",
        data_dir=tmp_path / "d",
        splits={"train": {"x": tmp_path / "x.npy"}},
        permute_seed=11,
        shard_bytes=8192,
    )
    ds = tfds.load(
        "perm", data_dir=tmp_path / "d", split="train", shuffle_files=False, batch_size=500
    )
    stored = np.concatenate([b["x"] for b in tfds.as_numpy(ds)])
    assert stored.tolist() == Permutation(n=3000, seed=11)(np.arange(3000)).tolist()


def test_permuted_build_refuses_forward_only_sources(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", x=np.arange(10))
    with pytest.raises(tb.PlanError, match="cannot be read in a permuted order"):
        tb.build(
            "perm2",
            data_dir=tmp_path / "d",
            splits={"train": {"x": f"{tmp_path}/c.npz"}},
            permute_seed=1,
        )
