"""Tests of the data pipeline: digits, image folders, tfds (mocked and tiny), augmentation."""

import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn import datasets as sklearn_datasets

from resjax import data
from resjax.config_base import base_config
from resjax.data import DataError, folder, folder_cache


def _data_config(**fields):
  config = base_config().data
  for name, value in fields.items():
    setattr(config, name, value)
  return config


def _row_multiset(images, labels):
  """Sorted (label, image bytes) pairs: equal for two sets of the same examples."""
  return sorted((int(label), image.tobytes()) for image, label in zip(images, labels))


# ------------------------------------------------------------------ digits


def test_digits_shapes_and_dtypes():
  config = _data_config(source='digits')
  train = data.load_split(config, 'train')
  test = data.load_split(config, 'test')
  assert train.images.shape == (1437, 8, 8, 1)
  assert test.images.shape == (360, 8, 8, 1)
  assert train.images.dtype == np.uint8
  assert train.labels.dtype == np.int32
  assert train.images.max() == 255
  assert train.num_classes == 10
  assert train.class_names == tuple('0123456789')
  assert data.num_classes_for(config) == 10
  assert data.image_shape_for(config) == (8, 8, 1)


def test_digits_split_deterministic_disjoint_complete():
  config = _data_config(source='digits')
  first = data.load_split(config, 'test')
  np.random.seed(123)  # the split must not depend on the global random state
  second = data.load_split(config, 'test')
  np.testing.assert_array_equal(first.images, second.images)
  np.testing.assert_array_equal(first.labels, second.labels)

  train = data.load_split(config, 'train')
  digits = sklearn_datasets.load_digits()
  everything = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  combined = _row_multiset(np.concatenate([train.images, first.images]),
                           np.concatenate([train.labels, first.labels]))
  assert combined == _row_multiset(everything, digits.target)
  # Stratified: every class is in the test split.
  assert set(first.labels.tolist()) == set(range(10))


def test_digits_invalid_test_fraction():
  with pytest.raises(DataError, match='digits_test_fraction'):
    data.load_split(_data_config(source='digits', digits_test_fraction=1.0), 'train')


def test_unknown_source_and_split():
  with pytest.raises(DataError, match='digits, folder, tfds'):
    data.load_split(_data_config(source='hdf5'), 'train')
  with pytest.raises(DataError, match='digits, folder, tfds'):
    data.num_classes_for(_data_config(source='hdf5'))
  with pytest.raises(DataError, match="'validation'"):
    data.load_split(_data_config(source='digits'), 'validation')


# ------------------------------------------------------------------ image folders


def _write_image(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _make_folder(root, rng=None):
  """Write a 2-class image folder: PNG and JPEG, RGB, grayscale, RGBA and an odd size.

  Returns:
    The exact pixels of the 32x32 RGB PNGs, by path relative to the split folder.
  """
  rng = rng or np.random.default_rng(0)
  exact = {}
  for split, count in (('train', 3), ('test', 2)):
    for class_name in ('cat', 'dog'):
      for i in range(count):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        name = f'{class_name}/{i}.png'
        _write_image(os.path.join(root, split, name), pixels)
        exact[f'{split}/{name}'] = pixels
      _write_image(os.path.join(root, split, class_name, 'photo.jpg'),
                   rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
  _write_image(os.path.join(root, 'train', 'cat', 'gray.png'),
               rng.integers(0, 256, (32, 32), dtype=np.uint8))
  _write_image(os.path.join(root, 'train', 'dog', 'alpha.png'),
               rng.integers(0, 256, (32, 32, 4), dtype=np.uint8))
  _write_image(os.path.join(root, 'train', 'dog', 'wide.jpeg'),
               rng.integers(0, 256, (20, 48, 3), dtype=np.uint8))
  return exact


def test_folder_loads_labels_and_pixels(tmp_path):
  root = str(tmp_path / 'images')
  exact = _make_folder(root)
  config = _data_config(source='folder', path=root)
  train = data.load_split(config, 'train')
  test = data.load_split(config, 'test')

  assert train.images.shape == (11, 32, 32, 3)
  assert test.images.shape == (6, 32, 32, 3)
  assert train.images.dtype == np.uint8
  assert train.class_names == ('cat', 'dog')
  assert train.name == f'folder:{os.path.abspath(root)}'
  # Sorted by class, then by file name: cat/0 1 2 gray photo, dog/0 1 2 alpha photo wide.
  np.testing.assert_array_equal(train.labels, [0] * 5 + [1] * 6)
  np.testing.assert_array_equal(test.labels, [0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(train.images[0], exact['train/cat/0.png'])
  np.testing.assert_array_equal(test.images[4], exact['test/dog/1.png'])
  gray = train.images[3]
  np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
  assert data.num_classes_for(config) == 2
  assert data.image_shape_for(config) == (32, 32, 3)


def test_folder_resizes_to_image_size(tmp_path):
  root = str(tmp_path / 'images')
  _make_folder(root)
  train = data.load_split(_data_config(source='folder', path=root, image_size=16), 'train')
  assert train.images.shape == (11, 16, 16, 3)


def test_folder_cache_reused_and_invalidated(tmp_path):
  root = str(tmp_path / 'images')
  _make_folder(root)
  config = _data_config(source='folder', path=root)
  first = data.load_split(config, 'train')
  cache_folder = os.path.join(root, '.resjax_cache')
  cached = [n for n in os.listdir(cache_folder) if n.startswith('train-32px-')]
  assert len(cached) == 1

  # A changed cache file content proves the second load reads it, not the images.
  with np.load(os.path.join(cache_folder, cached[0])) as stored:
    key, images = str(stored['key']), stored['images'].copy()
  images[0] = 7
  folder_cache.write_cache([cache_folder], cached[0], key, images)
  second = data.load_split(config, 'train')
  assert (second.images[0] == 7).all()
  np.testing.assert_array_equal(second.images[1:], first.images[1:])

  # Replacing an image makes a new key; the old cache file is removed.
  _write_image(os.path.join(root, 'train', 'cat', '0.png'), np.full((32, 32, 3), 9, np.uint8))
  third = data.load_split(config, 'train')
  assert (third.images[0] == 9).all()
  remaining = [n for n in os.listdir(cache_folder) if n.startswith('train-32px-')]
  assert len(remaining) == 1
  assert remaining != cached

  # A damaged cache file is ignored and replaced.
  with open(os.path.join(cache_folder, remaining[0]), 'wb') as f:
    f.write(b'PK\x03\x04 damaged')
  fourth = data.load_split(config, 'train')
  np.testing.assert_array_equal(fourth.images, third.images)
  with np.load(os.path.join(cache_folder, remaining[0])) as stored:
    np.testing.assert_array_equal(stored['images'], third.images)


def test_folder_cache_dir_config(tmp_path):
  root = str(tmp_path / 'images')
  _make_folder(root)
  cache_dir = str(tmp_path / 'cache')
  data.load_split(_data_config(source='folder', path=root, cache_dir=cache_dir), 'test')
  [subfolder] = os.listdir(cache_dir)
  assert subfolder.startswith('images-')
  assert len(os.listdir(os.path.join(cache_dir, subfolder))) == 1
  assert not os.path.exists(os.path.join(root, '.resjax_cache'))


def test_folder_worker_processes_match(tmp_path, monkeypatch):
  root = str(tmp_path / 'images')
  _make_folder(root)
  expected = data.load_split(_data_config(source='folder', path=root, cache_dir=str(
      tmp_path / 'cache_a')), 'train')
  monkeypatch.setattr(folder, '_MIN_FILES_PER_WORKER', 1)
  decoded = data.load_split(_data_config(source='folder', path=root, num_workers=2,
                                         cache_dir=str(tmp_path / 'cache_b')), 'train')
  np.testing.assert_array_equal(decoded.images, expected.images)

  corrupt = os.path.join(root, 'train', 'dog', 'broken.png')
  with open(corrupt, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n not really')
  with pytest.raises(DataError, match='broken.png'):
    data.load_split(_data_config(source='folder', path=root, num_workers=2,
                                 cache_dir=str(tmp_path / 'cache_c')), 'train')


def _expect_folder_error(root, split, *expected_in_message):
  with pytest.raises(DataError) as raised:
    data.load_split(_data_config(source='folder', path=root), split)
  for text in expected_in_message:
    assert text in str(raised.value)


def test_folder_missing_path_and_split(tmp_path):
  _expect_folder_error(str(tmp_path / 'nowhere'), 'train', str(tmp_path / 'nowhere'),
                       'not found')
  root = str(tmp_path / 'images')
  _write_image(os.path.join(root, 'train', 'cat', 'a.png'), np.zeros((32, 32, 3), np.uint8))
  _expect_folder_error(root, 'test', os.path.join(root, 'test'), 'not found')
  with pytest.raises(DataError, match='config.data.path is empty'):
    data.load_split(_data_config(source='folder'), 'train')


def test_folder_no_class_folders(tmp_path):
  root = str(tmp_path / 'images')
  os.makedirs(os.path.join(root, 'train'))
  _expect_folder_error(root, 'train', os.path.join(root, 'train'), 'No class folders')


def test_folder_empty_class(tmp_path):
  root = str(tmp_path / 'images')
  _make_folder(root)
  os.makedirs(os.path.join(root, 'train', 'emu'))
  os.makedirs(os.path.join(root, 'test', 'emu'))
  _expect_folder_error(root, 'train', os.path.join(root, 'train', 'emu'), 'contains no images')


def test_folder_corrupt_file(tmp_path):
  root = str(tmp_path / 'images')
  _make_folder(root)
  corrupt = os.path.join(root, 'test', 'cat', 'cut.jpg')
  with open(os.path.join(root, 'test', 'cat', 'photo.jpg'), 'rb') as f:
    truncated = f.read()[:100]
  with open(corrupt, 'wb') as f:
    f.write(truncated)
  _expect_folder_error(root, 'test', corrupt, 'corrupt or unreadable')
  # A failed load writes no cache file.
  cache_folder = os.path.join(root, '.resjax_cache')
  assert not os.path.exists(cache_folder) or not os.listdir(cache_folder)


def test_folder_non_image_file(tmp_path):
  root = str(tmp_path / 'images')
  _make_folder(root)
  notes = os.path.join(root, 'train', 'dog', 'notes.txt')
  with open(notes, 'w') as f:
    f.write('not an image')
  _expect_folder_error(root, 'train', notes, 'not a JPEG or PNG image')
  stray = os.path.join(root, 'test', 'labels.csv')
  with open(stray, 'w') as f:
    f.write('a,b')
  _expect_folder_error(root, 'test', stray, 'class folders')


def test_folder_mismatched_class_sets(tmp_path):
  root = str(tmp_path / 'images')
  _make_folder(root)
  _write_image(os.path.join(root, 'test', 'emu', 'a.png'), np.zeros((32, 32, 3), np.uint8))
  for split in ('train', 'test'):
    _expect_folder_error(root, split, os.path.join(root, 'train'), os.path.join(root, 'test'),
                         'only in test: emu')


def test_folder_ignores_hidden_entries(tmp_path):
  root = str(tmp_path / 'images')
  _make_folder(root)
  with open(os.path.join(root, 'train', 'cat', '.DS_Store'), 'w') as f:
    f.write('x')
  os.makedirs(os.path.join(root, 'train', '.thumbnails'))
  assert len(data.load_split(_data_config(source='folder', path=root), 'train')) == 11


# ------------------------------------------------------------------ tfds


def test_tfds_mock_cifar10_load_split():
  with tfds.testing.mock_data(num_examples=6):
    train = data.load_split(_data_config(name='cifar10'), 'train')
  assert train.images.shape == (6, 32, 32, 3)
  assert train.images.dtype == np.uint8
  assert train.labels.dtype == np.int32
  assert train.num_classes == 10
  assert train.name == 'cifar10'
  assert ((train.labels >= 0) & (train.labels < 10)).all()


def test_tfds_offline_error_names_remedies(tmp_path, monkeypatch):
  downloads = []
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      lambda self, *args, **kwargs: downloads.append(self.name))
  config = _data_config(name='cifar10', data_dir=str(tmp_path))
  with pytest.raises(DataError) as raised:
    data.load_split(config, 'train')
  message = str(raised.value)
  assert 'cifar10' in message
  assert str(tmp_path) in message
  assert '--config.data.data_dir' in message
  assert '--config.data.download=True' in message
  assert '--config.data.source=folder --config.data.path=' in message
  assert raised.value.__cause__ is None
  assert raised.value.__suppress_context__

  with pytest.raises(DataError, match='--config.data.manual_dir'):
    data.load_split(_data_config(name='imagenet2012', data_dir=str(tmp_path)), 'test')
  with pytest.raises(DataError, match="no dataset named 'cifar1O'"):
    data.load_split(_data_config(name='cifar1O', data_dir=str(tmp_path)), 'test')
  assert not downloads


def test_tfds_known_shapes_without_loading():
  assert data.num_classes_for(_data_config(name='cifar100')) == 100
  assert data.image_shape_for(_data_config(name='mnist')) == (28, 28, 1)
  assert data.image_shape_for(_data_config(name='imagenet2012', image_size=64)) == (64, 64, 3)


def _indexed_dataset_fn(num_examples):
  """An as_dataset replacement for tfds.testing.mock_data: image i stores i in its pixels."""

  def as_dataset(self, *args, **kwargs):
    del args, kwargs
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    index = np.arange(num_examples)
    images = np.zeros((num_examples, 32, 32, 3), np.uint8)
    images[:, :, :, 0] = (index // 256)[:, None, None]
    images[:, :, :, 1] = (index % 256)[:, None, None]
    return tf.data.Dataset.from_tensor_slices({'image': images, 'label': index % 10})

  return as_dataset


def _image_ids(images):
  return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 0, 1]


def test_stream_split_covers_every_image_once():
  with tfds.testing.mock_data(as_dataset_fn=_indexed_dataset_fn(23)):
    batches = list(data.stream_split(_data_config(name='cifar10'), 'train', 5, shuffle=True,
                                     seed=4))
  assert [len(labels) for _, labels in batches] == [5, 5, 5, 5, 3]
  ids = np.concatenate([_image_ids(images) for images, _ in batches])
  assert sorted(ids.tolist()) == list(range(23))
  assert ids.tolist() != list(range(23))  # shuffled
  labels = np.concatenate([labels for _, labels in batches])
  assert labels.dtype == np.int32
  np.testing.assert_array_equal(labels, ids % 10)


def test_stream_split_in_memory_source_and_shards():
  config = _data_config(source='digits')
  full = data.load_split(config, 'test')
  streamed = []
  for shard in range(3):
    streamed += list(data.stream_split(config, 'test', 64, shuffle=True, seed=1,
                                       shard_index=shard, shard_count=3))
  images = np.concatenate([images for images, _ in streamed])
  labels = np.concatenate([labels for _, labels in streamed])
  assert _row_multiset(images, labels) == _row_multiset(full.images, full.labels)
  with pytest.raises(DataError, match='batch size'):
    data.stream_split(config, 'test', 0, shuffle=False, seed=0)
  with pytest.raises(DataError, match='shard'):
    data.stream_split(config, 'test', 8, shuffle=False, seed=0, shard_index=3, shard_count=3)


class ResjaxTinyImages(tfds.core.GeneratorBasedBuilder):
  """A tiny prepared tfds dataset of varying image sizes; image i stores i in its pixels."""

  VERSION = tfds.core.Version('1.0.0')
  SPLIT_SIZES = {'train': 23, 'test': 11}

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            'label': tfds.features.ClassLabel(names=['a', 'b', 'c'])}),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(size) for split, size in self.SPLIT_SIZES.items()}

  def _generate_examples(self, size):
    for i in range(size):
      image = np.zeros((10 + i % 5, 12, 3), np.uint8)
      image[..., 0] = i // 256
      image[..., 1] = i % 256
      yield i, {'image': image, 'label': i % 3}


@pytest.fixture(scope='module')
def tiny_tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tfds.disable_progress_bar()
  ResjaxTinyImages(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_tfds_prepared_copy_varying_sizes(tiny_tfds_dir):
  config = _data_config(name='resjax_tiny_images', data_dir=tiny_tfds_dir, image_size=6)
  assert data.num_classes_for(config) == 3
  assert data.image_shape_for(config) == (6, 6, 3)
  train = data.load_split(config, 'train')
  assert train.images.shape == (23, 6, 6, 3)
  assert train.class_names == ('a', 'b', 'c')
  ids = _image_ids(train.images)
  assert sorted(ids.tolist()) == list(range(23))
  np.testing.assert_array_equal(train.labels, ids % 3)

  config.train_split = 'trian'
  with pytest.raises(DataError, match="split 'trian'"):
    data.load_split(config, 'train')


def test_tfds_split_size_and_estimated_stats(tiny_tfds_dir):
  config = _data_config(name='resjax_tiny_images', data_dir=tiny_tfds_dir, image_size=6)
  assert data.split_size(config, 'train') == 23
  assert data.split_size(config, 'test') == 11
  train = data.load_split(config, 'train')
  # With every image in the sample, the estimate is the exact statistics.
  mean, std = data.estimate_channel_stats(config, 100)
  expected_mean, expected_std = data.channel_stats(train.images)
  np.testing.assert_allclose(mean, expected_mean, rtol=1e-6)
  np.testing.assert_allclose(std, expected_std, rtol=1e-6)
  with tfds.testing.mock_data(as_dataset_fn=_indexed_dataset_fn(23)):
    assert data.split_size(_data_config(name='cifar10'), 'test') == 23
  assert data.split_size(_data_config(source='digits'), 'test') == 360


def test_tfds_stream_shards_and_random_crop(tiny_tfds_dir):
  config = _data_config(name='resjax_tiny_images', data_dir=tiny_tfds_dir, image_size=6)
  ids = []
  for shard in range(3):
    for images, _ in data.stream_split(config, 'train', 4, shuffle=True, seed=2,
                                       shard_index=shard, shard_count=3):
      assert images.shape[1:] == (6, 6, 3)
      ids += _image_ids(images).tolist()
  assert sorted(ids) == list(range(23))

  def crops(seed):
    return np.concatenate([images for images, _ in data.stream_split(
        config, 'test', 5, shuffle=False, seed=seed, random_crop=True)])

  np.testing.assert_array_equal(crops(5), crops(5))


# ------------------------------------------------------------------ augment and preprocess


def _augment_config(crop_padding, flip):
  config = base_config().data.augment
  config.crop_padding = crop_padding
  config.flip = flip
  return config


def _random_images(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_augment_identity_without_crop_and_flip():
  images = _random_images((4, 8, 8, 3))
  out = data.augment(jax.random.key(0), images, _augment_config(0, False))
  np.testing.assert_array_equal(out, images)


def test_augment_flip_gives_image_or_mirror():
  images = _random_images((64, 6, 6, 3))
  config = _augment_config(0, True)
  out = np.asarray(jax.jit(lambda key, x: data.augment(key, x, config))(
      jax.random.key(1), images))
  assert out.shape == images.shape
  assert out.dtype == np.uint8
  same = (out == images).all(axis=(1, 2, 3))
  mirrored = (out == images[:, :, ::-1]).all(axis=(1, 2, 3))
  assert (same | mirrored).all()
  assert same.any()
  assert mirrored.any()


def test_augment_crop_is_padded_window():
  padding = 2
  images = _random_images((16, 8, 8, 3), seed=3)
  out = np.asarray(data.augment(jax.random.key(2), images, _augment_config(padding, False)))
  assert out.shape == images.shape
  assert out.dtype == np.uint8
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = set()
  for i in range(len(images)):
    matches = [(top, left) for top in range(2 * padding + 1) for left in range(2 * padding + 1)
               if (padded[i, top:top + 8, left:left + 8] == out[i]).all()]
    assert len(matches) == 1, f'image {i} is no window of its padded input'
    offsets.add(matches[0])
  assert len(offsets) > 1  # the offsets differ between images


def test_augment_invalid_padding():
  with pytest.raises(DataError, match='crop_padding'):
    data.augment(jax.random.key(0), _random_images((1, 4, 4, 3)), _augment_config(-1, False))


def test_preprocess_normalizes_fitted_data():
  images = _random_images((50, 5, 5, 3))
  images[..., 2] //= 4  # a channel of other mean and spread
  mean, std = data.channel_stats(images)
  assert mean.dtype == np.float32
  np.testing.assert_allclose(mean, (images / 255).mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, (images / 255).std(axis=(0, 1, 2)), rtol=1e-5)

  normalized = np.asarray(data.preprocess(images, mean, std, normalize=True))
  assert normalized.dtype == np.float32
  np.testing.assert_allclose(normalized.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(normalized.std(axis=(0, 1, 2)), 1, atol=1e-5)

  scaled = np.asarray(data.preprocess(images, mean, std, normalize=False))
  np.testing.assert_allclose(scaled, images / 255, rtol=1e-6)


def test_channel_stats_constant_channel():
  images = np.zeros((2, 3, 3, 2), np.uint8)
  images[..., 0] = 51
  mean, std = data.channel_stats(images)
  np.testing.assert_allclose(mean, [0.2, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(std, [1.0, 1.0])
