"""Write a small, randomly initialised ViT checkpoint (config, weights, PIL image processor) to a folder.

    python recipes/data/make_small_vit.py --out runs/models/vit-small-random

No pretrained vision checkpoint is installable here, so transfer is shown the classic way: this model is
trained on Fashion-MNIST (the source task) and then fine-tuned on digits, against itself from random init.
"""

import argparse


def main() -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/models/vit-small-random")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    config = ViTConfig(image_size=args.image_size, patch_size=args.patch_size, hidden_size=args.hidden,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       intermediate_size=2 * args.hidden, num_labels=2)
    ViTForImageClassification(config).save_pretrained(args.out)
    ViTImageProcessorPil(size={"height": args.image_size, "width": args.image_size},
                         image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(args.out)
    print(f"ViT ({sum(p.numel() for p in ViTForImageClassification(config).parameters()):,} parameters) -> {args.out}")


if __name__ == "__main__":
    main()
