"""Export Fashion-MNIST (70,000 28x28 grayscale images, 10 classes) from Debian's `dataset-fashion-mnist`
package to a saved `datasets` folder with `train` (60,000) and `test` (10,000) splits.

    apt-get install dataset-fashion-mnist
    python recipes/data/export_fashion_mnist.py --out runs/datasets/fashion-mnist

Used as the source task for transfer to digits (recipes/configs/fashion_mnist_vit_pretrain.yaml).
"""

import argparse
import gzip
from pathlib import Path

import numpy as np

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian header of dimension sizes, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> None:
    import datasets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist", help="folder of the .gz IDX files")
    parser.add_argument("--out", default="runs/datasets/fashion-mnist", help="saved dataset folder to create")
    args = parser.parse_args()

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(Path(args.source) / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(Path(args.source) / f"{prefix}-labels-idx1-ubyte.gz")
        splits[split] = datasets.Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)
    datasets.DatasetDict(splits).save_to_disk(args.out)
    print({name: len(ds) for name, ds in splits.items()}, "->", args.out)


if __name__ == "__main__":
    main()
