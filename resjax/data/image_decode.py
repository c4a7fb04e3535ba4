"""Decoding image files to square RGB arrays with PIL, in this process or in a worker.

Run as a script, this file is one decoding worker (see ``main``). It imports only the
standard library, numpy and PIL, so a worker starts in about half a second, and the
script's folder, which Python puts first on sys.path, contains no module that those import.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from PIL import Image, ImageOps

# Errors PIL raises for a file it cannot read: UnidentifiedImageError and truncated data
# are OSError, some format plugins raise SyntaxError or ValueError on broken headers.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decode_image(path: str, image_size: int) -> np.ndarray:
  """Decode one image file to uint8 [image_size, image_size, 3] RGB.

  Grayscale, palette and RGBA images are converted to RGB (alpha is dropped). An image
  of another size is scaled so that its shorter side is ``image_size`` and then cropped
  to the central square, which keeps the aspect ratio of the content.
  """
  with Image.open(path) as image:
    image = image.convert('RGB')
  if image.size != (image_size, image_size):
    image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BICUBIC)
  return np.asarray(image, dtype=np.uint8)


def decode_files(paths: list[str], image_size: int
                 ) -> tuple[np.ndarray, list[tuple[str, str]]]:
  """Decode many image files; a file that fails leaves zeros and a failure record.

  Returns:
    The images, uint8 [len(paths), image_size, image_size, 3], and a list of
    (path, reason) for every file that could not be decoded.
  """
  images = np.zeros((len(paths), image_size, image_size, 3), np.uint8)
  failures = []
  for i, path in enumerate(paths):
    try:
      images[i] = decode_image(path, image_size)
    except _DECODE_ERRORS as error:
      failures.append((path, f'{type(error).__name__}: {error}'))
  return images, failures


def main(argv: list[str]) -> None:
  """Decode the files of a JSON list; write the images as .npy and the failures as JSON.

  Usage: ``python image_decode.py IMAGE_SIZE PATHS_JSON OUTPUT_PREFIX``, which writes
  ``OUTPUT_PREFIX.npy`` and ``OUTPUT_PREFIX.json``.
  """
  image_size, paths_file, output_prefix = int(argv[1]), argv[2], argv[3]
  with open(paths_file, encoding='utf-8') as f:
    paths = json.load(f)
  images, failures = decode_files(paths, image_size)
  np.save(f'{output_prefix}.npy', images)
  with open(f'{output_prefix}.json', 'w', encoding='utf-8') as f:
    json.dump(failures, f)


if __name__ == '__main__':
  main(sys.argv)
