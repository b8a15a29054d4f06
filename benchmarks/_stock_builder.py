"""A stock TFDS builder (tfds.features.Tensor, stock writer), the baseline."""

import numpy as np
import tensorflow_datasets as tfds


class StockArrays(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Rows of x.npy / y.npy through TFDS's own feature encoding and writer."""

    VERSION = tfds.core.Version("1.0.0")
    SOURCE_DIR = None  # set before building

    def _info(self):
        x = np.load(f"{self.SOURCE_DIR}/x.npy", mmap_mode="r")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "x": tfds.features.Tensor(shape=x.shape[1:], dtype=np.float32),
                    "y": tfds.features.Tensor(shape=(), dtype=np.float32),
                }
            ),
            supervised_keys=("x", "y"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        x = np.load(f"{self.SOURCE_DIR}/x.npy", mmap_mode="r")
        y = np.load(f"{self.SOURCE_DIR}/y.npy", mmap_mode="r")
        for i in range(len(x)):
            yield i, {"x": np.asarray(x[i]), "y": np.float32(y[i])}


def build_stock(
    name: str, *, source_dir: str, data_dir: str, file_format: str = "tfrecord"
) -> None:
    # The builder must live in a package (TFDS looks for its folder).
    cls = type(
        name.title().replace("_", ""),
        (StockArrays,),
        {"name": name, "SOURCE_DIR": source_dir, "__module__": __name__},
    )
    builder = cls(data_dir=data_dir, file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
