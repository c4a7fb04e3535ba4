"""Image folders: ``<path>/<split>/<class>/<image>``, JPEG or PNG, decoded with PIL.

Class numbers follow the sorted class-folder names, so both splits must contain the same
class folders. Names starting with '.' are skipped at every level (the cache folder,
.DS_Store and the like). Decoded splits are cached as .npz files (see folder_cache).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import logging

from resjax.data import folder_cache, image_decode
from resjax.data.dataset import ArrayDataset, DataError, SPLITS, source_split

IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png')
# A worker process takes about half a second to start, the time to decode about 1,500
# CIFAR-sized JPEGs, so small folders are decoded in this process.
_MIN_FILES_PER_WORKER = 2000
_MAX_FAILURES_SHOWN = 5
_STDERR_LINES_SHOWN = 20


@dataclasses.dataclass(frozen=True)
class SplitListing:
  """The images of one split folder, sorted by class name and then by file name.

  Attributes:
    folder: the split folder, ``<path>/<split>``.
    class_names: sorted class-folder names.
    files: image paths relative to ``folder``.
    labels: int32 class number of each file.
    stats: (size in bytes, modification time in ns) of each file.
  """

  folder: str
  class_names: tuple[str, ...]
  files: tuple[str, ...]
  labels: np.ndarray
  stats: tuple[tuple[int, int], ...]


def _visible_entries(folder: str) -> list[os.DirEntry]:
  with os.scandir(folder) as entries:
    return sorted((e for e in entries if not e.name.startswith('.')), key=lambda e: e.name)


def check_root(data_config) -> str:
  """Return the image-folder root ``data_config.path``, or raise DataError if unusable."""
  root = data_config.path
  if not root:
    raise DataError('config.data.path is empty, but config.data.source is \'folder\'. Set '
                    '--config.data.path=<root>, the folder that contains <split>/<class>/<image>.')
  root = os.path.expanduser(root)
  if not os.path.isdir(root):
    problem = 'is not a folder' if os.path.exists(root) else 'not found'
    raise DataError(f'Image folder {root} (config.data.path) {problem}. Set '
                    '--config.data.path to the folder that contains <split>/<class>/<image>.')
  return root


def _split_folder(root: str, split_name: str) -> str:
  folder = os.path.join(root, split_name)
  if not os.path.isdir(folder):
    found = [e.name for e in _visible_entries(root) if e.is_dir()]
    raise DataError(f'Split folder {folder} not found. The image folder needs '
                    f'<path>/<split>/<class>/<image>; config.data.train_split and '
                    f'test_split name the split folders. Subfolders of {root}: '
                    f'{", ".join(found) or "none"}.')
  return folder


def list_class_names(folder: str) -> tuple[str, ...]:
  """Return the sorted class-folder names of a split folder; raise DataError on stray files."""
  names = []
  for entry in _visible_entries(folder):
    if not entry.is_dir():
      raise DataError(f'{entry.path} is a file directly in the split folder {folder}, but '
                      'images must sit in class folders: <split>/<class>/<image>. Move it '
                      'into a class folder or remove it.')
    names.append(entry.name)
  if not names:
    raise DataError(f'No class folders in {folder}. The image folder needs '
                    '<path>/<split>/<class>/<image>, one folder per class.')
  return tuple(names)


def list_split(folder: str) -> SplitListing:
  """List and check the class folders and image files of one split folder."""
  class_names = list_class_names(folder)
  files, labels, stats = [], [], []
  for label, class_name in enumerate(class_names):
    class_folder = os.path.join(folder, class_name)
    entries = _visible_entries(class_folder)
    if not entries:
      raise DataError(f'Class folder {class_folder} contains no images. Add images or remove '
                      'the folder from every split.')
    for entry in entries:
      if entry.is_dir():
        raise DataError(f'{entry.path} is a folder inside a class folder, but images must '
                        'sit directly in the class folder: <split>/<class>/<image>.')
      if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
        raise DataError(f'{entry.path} is not a JPEG or PNG image (expected one of the '
                        f'extensions {", ".join(IMAGE_EXTENSIONS)}). Remove it or move it '
                        'out of the image folder.')
      stat = entry.stat()
      files.append(os.path.join(class_name, entry.name))
      labels.append(label)
      stats.append((stat.st_size, stat.st_mtime_ns))
  return SplitListing(folder=folder, class_names=class_names, files=tuple(files),
                      labels=np.asarray(labels, np.int32), stats=tuple(stats))


def _check_same_classes(root: str, data_config, split: str,
                        class_names: tuple[str, ...]) -> None:
  """Raise DataError if the other split folder, when present, has other class folders."""
  other = SPLITS[1 - SPLITS.index(split)]
  other_folder = os.path.join(root, source_split(data_config, other))
  if not os.path.isdir(other_folder):
    return
  other_names = list_class_names(other_folder)
  if other_names == class_names:
    return
  only_here = sorted(set(class_names) - set(other_names))
  only_other = sorted(set(other_names) - set(class_names))
  folder = os.path.join(root, source_split(data_config, split))
  raise DataError(f'The class folders of {folder} and {other_folder} differ: only in '
                  f'{split}: {", ".join(only_here) or "none"}; only in {other}: '
                  f'{", ".join(only_other) or "none"}. Both splits need the same class '
                  'folders, because class numbers follow the sorted folder names.')


def folder_class_names(data_config) -> tuple[str, ...]:
  """Return the class names of the train split folder, without reading any image."""
  root = check_root(data_config)
  return list_class_names(_split_folder(root, source_split(data_config, 'train')))


def _worker_count(data_config, num_files: int) -> int:
  requested = data_config.num_workers
  if requested < 0:
    raise DataError(f'config.data.num_workers must be >= 0 (0: one per CPU core), got '
                    f'{requested}.')
  if hasattr(os, 'sched_getaffinity'):  # Linux: the cores this process may run on
    cores = len(os.sched_getaffinity(0))
  else:
    cores = os.cpu_count() or 1
  available = requested or cores
  return max(1, min(available, math.ceil(num_files / _MIN_FILES_PER_WORKER)))


def _decode_in_workers(paths: list[str], image_size: int, workers: int
                       ) -> tuple[np.ndarray, list[tuple[str, str]]]:
  """Decode contiguous shares of ``paths`` in ``workers`` processes running image_decode.py.

  Workers are fresh interpreters, not forks (forking a process that runs JAX or
  TensorFlow threads can deadlock the child) and not multiprocessing spawns (which
  re-import the caller's main module and this package, JAX included).
  """
  images = np.empty((len(paths), image_size, image_size, 3), np.uint8)
  failures = []
  shares = np.array_split(np.arange(len(paths)), workers)
  with tempfile.TemporaryDirectory(prefix='resjax-decode-') as scratch:
    processes = []
    for k, share in enumerate(shares):
      paths_file = os.path.join(scratch, f'paths-{k}.json')
      with open(paths_file, 'w', encoding='utf-8') as f:
        json.dump([paths[i] for i in share], f)
      command = [sys.executable, image_decode.__file__, str(image_size), paths_file,
                 os.path.join(scratch, f'images-{k}')]
      processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True))
    errors = [process.communicate()[1] for process in processes]
    for k, (share, process, error) in enumerate(zip(shares, processes, errors)):
      if process.returncode != 0:
        tail = '\n'.join(error.strip().splitlines()[-_STDERR_LINES_SHOWN:])
        raise RuntimeError(f'An image decoding worker failed with exit code '
                           f'{process.returncode}:\n{tail}')
      images[share] = np.load(os.path.join(scratch, f'images-{k}.npy'))
      with open(os.path.join(scratch, f'images-{k}.json'), encoding='utf-8') as f:
        failures.extend(tuple(failure) for failure in json.load(f))
  return images, failures


def _decode(listing: SplitListing, image_size: int, workers: int) -> np.ndarray:
  """Decode every listed image; raise DataError naming the files that fail."""
  paths = [os.path.join(listing.folder, f) for f in listing.files]
  if workers == 1:
    images, failures = image_decode.decode_files(paths, image_size)
  else:
    images, failures = _decode_in_workers(paths, image_size, workers)
  if failures:
    shown = '\n'.join(f'  {path}: {reason}' for path, reason in failures[:_MAX_FAILURES_SHOWN])
    more = len(failures) - _MAX_FAILURES_SHOWN
    raise DataError(f'{len(failures)} image file(s) in {listing.folder} are corrupt or '
                    f'unreadable:\n{shown}' + (f'\n  ... and {more} more' if more > 0 else '')
                    + '\nReplace or remove them.')
  return images


def load_folder_split(data_config, split: str) -> ArrayDataset:
  """Load one split of an image folder as uint8 [N, S, S, 3], S = data_config.image_size.

  The first load decodes every image, in worker processes for large folders, and
  caches the result; later loads of an unchanged folder read the cache.
  """
  root = check_root(data_config)
  image_size = data_config.image_size
  if image_size < 1:
    raise DataError(f'config.data.image_size must be >= 1, got {image_size}.')
  listing = list_split(_split_folder(root, source_split(data_config, split)))
  _check_same_classes(root, data_config, split, listing.class_names)

  key = folder_cache.cache_key(listing.class_names, listing.files, listing.stats, image_size)
  folders = folder_cache.cache_folders(root, data_config.cache_dir)
  file_name = folder_cache.cache_file_name(os.path.basename(listing.folder), image_size, key)
  shape = (len(listing.files), image_size, image_size, 3)
  images = folder_cache.read_cache(folders, file_name, key, shape)
  if images is None:
    workers = _worker_count(data_config, len(listing.files))
    logging.info('Decoding %d images of %s with %d process(es).', len(listing.files),
                 listing.folder, workers)
    start = time.perf_counter()
    images = _decode(listing, image_size, workers)
    logging.info('Decoded %s in %.1f s.', listing.folder, time.perf_counter() - start)
    folder_cache.write_cache(folders, file_name, key, images)

  return ArrayDataset(images=images, labels=listing.labels,
                      num_classes=len(listing.class_names), class_names=listing.class_names,
                      name=f'folder:{os.path.abspath(root)}')
