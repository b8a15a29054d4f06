"""Writes the kilobyte arrays under dummy_data/ (committed; rerun to refresh)."""

import pathlib

import numpy as np

HERE = pathlib.Path(__file__).parent


def main() -> None:
    rng = np.random.default_rng(20261124)
    out = HERE / "toy_arrays"
    out.mkdir(exist_ok=True)
    for split, n in (("train", 24), ("validation", 8)):
        np.save(out / f"x_{split}.npy", rng.normal(size=(n, 4, 4)).astype(np.float32))
        np.save(out / f"y_{split}.npy", rng.integers(0, 3, size=n).astype(np.int64))


if __name__ == "__main__":
    main()
