"""Datasets: tfds, local image folders and the scikit-learn digits."""

from __future__ import annotations

# TODO: replaced by the data pipeline; only the class counts are known here so far.
_KNOWN_CLASSES = {'digits': 10, 'cifar10': 10, 'cifar100': 100, 'svhn_cropped': 10,
                  'mnist': 10, 'imagenet2012': 1000}


def num_classes_for(data_config) -> int:
  """Return the number of classes of the dataset that ``data_config`` names."""
  key = 'digits' if data_config.source == 'digits' else data_config.name
  return _KNOWN_CLASSES[key]
