"""A cache of decoded image-folder splits as .npz files, keyed on the folder's contents.

The key is a SHA-256 over every image's relative path, size in bytes and modification
time, the class names, the image size and the cache format. Adding, removing, replacing
or touching an image therefore makes a new key, and the split is decoded again.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from typing import Sequence

import numpy as np
from absl import logging

# Raised to 2 when the stored arrays or the key change meaning.
_CACHE_FORMAT = 1
_CACHE_FOLDER_NAME = '.resjax_cache'
# Errors of a missing, truncated or foreign cache file: the split is decoded again.
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def cache_key(class_names: Sequence[str], files: Sequence[str],
              stats: Sequence[tuple[int, int]], image_size: int) -> str:
  """Return the hex SHA-256 that names the cache file of one listed split.

  Args:
    class_names: sorted class folder names.
    files: image paths relative to the split folder.
    stats: (size in bytes, modification time in ns) of each file.
    image_size: side of the decoded square images.
  """
  digest = hashlib.sha256(f'format {_CACHE_FORMAT}\nsize {image_size}\n'.encode())
  digest.update(('\n'.join(class_names) + '\n\n').encode())
  for path, (size, mtime_ns) in zip(files, stats, strict=True):
    digest.update(f'{path}\t{size}\t{mtime_ns}\n'.encode())
  return digest.hexdigest()


def cache_folders(root: str, cache_dir: str) -> list[str]:
  """Return the folders to look for and write the cache of the image folder ``root``, in order.

  With ``cache_dir`` empty: ``<root>/.resjax_cache``, then ``~/.cache/resjax/<name>``
  for a read-only ``root``. A folder outside ``root`` gets a subfolder named after the
  real path of ``root``, so that one cache folder serves several image folders.
  """
  real_root = os.path.realpath(root)
  readable = re.sub(r'[^A-Za-z0-9_.-]', '_', os.path.basename(real_root)) or 'root'
  subfolder = f'{readable}-{hashlib.sha256(real_root.encode()).hexdigest()[:12]}'
  if cache_dir:
    return [os.path.join(os.path.expanduser(cache_dir), subfolder)]
  home_cache = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return [os.path.join(root, _CACHE_FOLDER_NAME),
          os.path.join(home_cache, 'resjax', subfolder)]


def cache_file_name(split_folder: str, image_size: int, key: str) -> str:
  return f'{split_folder}-{image_size}px-{key[:32]}.npz'


def read_cache(folders: Sequence[str], file_name: str, key: str,
               expected_shape: tuple[int, ...]) -> np.ndarray | None:
  """Return the cached images, or None when no folder contains a valid cache file."""
  for folder in folders:
    path = os.path.join(folder, file_name)
    if not os.path.exists(path):
      continue
    try:
      with np.load(path, allow_pickle=False) as stored:
        stored_key = str(stored['key'])
        images = stored['images']
    except _READ_ERRORS as error:
      logging.warning('Ignoring the unreadable cache file %s (%s); decoding again.',
                      path, error)
      continue
    if stored_key != key or images.shape != expected_shape or images.dtype != np.uint8:
      logging.warning('Ignoring the cache file %s: it contains %s %s for key %s, expected '
                      'uint8 %s for key %s.', path, images.dtype, images.shape,
                      stored_key[:12], expected_shape, key[:12])
      continue
    logging.info('Loaded %d decoded images from the cache file %s.', len(images), path)
    return images
  return None


def write_cache(folders: Sequence[str], file_name: str, key: str,
                images: np.ndarray) -> str | None:
  """Write the decoded images to the first writable folder and return the file's path.

  The file is written under a temporary name and renamed, so a reader never sees a
  partial file. Older cache files of the same split and image size in that folder are
  removed. Returns None, after a warning, when no folder is writable: the images are
  then decoded again on the next load.
  """
  for folder in folders:
    path = os.path.join(folder, file_name)
    temporary = os.path.join(folder, f'.tmp-{os.getpid()}-{file_name}')
    try:
      os.makedirs(folder, exist_ok=True)
      with open(temporary, 'wb') as f:
        np.savez(f, images=images, key=np.array(key))
      os.replace(temporary, path)
    except OSError as error:
      logging.warning('Cannot write the image cache in %s (%s).', folder, error)
      if os.path.exists(temporary):
        os.remove(temporary)
      continue
    _remove_older_files(folder, file_name)
    logging.info('Cached %d decoded images in %s.', len(images), path)
    return path
  logging.warning('No writable cache folder among %s: set --config.data.cache_dir to a '
                  'writable folder to load this image folder faster next time.',
                  ', '.join(folders))
  return None


def _remove_older_files(folder: str, current: str) -> None:
  """Remove the cache files of the same split and image size as ``current``, but older keys."""
  prefix = current.rsplit('-', 1)[0] + '-'
  for name in os.listdir(folder):
    if name != current and name.startswith(prefix) and name.endswith('.npz'):
      try:
        os.remove(os.path.join(folder, name))
      except OSError as error:
        logging.warning('Cannot remove the old cache file %s (%s).', name, error)
