"""Export scikit-learn's handwritten digits (1,797 8x8 images, 10 classes) to an image folder.

    python recipes/data/export_digits.py --out runs/datasets/digits

writes `OUT/train/<digit>/<n>.png` and `OUT/test/<digit>/<n>.png`: a stratified 20% test split with seed 42.
Images stay 8x8 grayscale (pixel values 0..16 scaled to 0..255); the model's image processor upscales them
and the recipe converts grayscale to RGB.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/datasets/digits", help="folder to create")
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    indices = np.arange(len(images))
    train, test = train_test_split(indices, test_size=args.test_size, random_state=args.seed, stratify=digits.target)
    for split, chosen in (("train", train), ("test", test)):
        for i in chosen:
            folder = Path(args.out) / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
        print(f"{split}: {len(chosen)} images in {Path(args.out) / split}")


if __name__ == "__main__":
    main()
