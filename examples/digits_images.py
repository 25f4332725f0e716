"""Write the real digits (the demo models' training data) as an .npz of images for `compressor fid-stats`.

    python examples/digits_images.py digits.npz [--count 1797]
    compressor fid-stats digits.npz --out digits-fid.npz
    compressor run examples/digits-dcgan --fid-stats digits-fid.npz     # FID against real digits
"""

import argparse
from pathlib import Path

import numpy as np

from digits_common import load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=1797, help="how many of the 1797 digits")
    args = parser.parse_args()
    images = load_data()[: args.count]  # [N, 1, 32, 32] in [-1, 1], as the models were trained on
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).numpy().astype(np.uint8)
    np.savez(args.out, images=pixels)
    print(f"{args.out}: {len(pixels)} images, {list(pixels.shape[1:])}, uint8")


if __name__ == "__main__":
    main()
