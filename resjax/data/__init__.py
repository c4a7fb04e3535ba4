"""Datasets: the scikit-learn digits, local image folders and TensorFlow Datasets.

``load_split`` returns a whole split as uint8 arrays in host memory; ``stream_split``
yields batches of one pass for datasets too large for that. ``augment`` and
``preprocess`` run on the device, inside jit. Every data problem raises DataError.
"""

from resjax.data.augment import augment
from resjax.data.dataset import SPLITS, ArrayDataset, DataError
from resjax.data.normalization import channel_stats, preprocess
from resjax.data.sources import SOURCES, image_shape_for, load_split, num_classes_for
from resjax.data.streaming import (estimate_channel_stats, split_size, stream_arrays,
                                   stream_split)

__all__ = ['SOURCES', 'SPLITS', 'ArrayDataset', 'DataError', 'augment', 'channel_stats',
           'estimate_channel_stats', 'image_shape_for', 'load_split', 'num_classes_for',
           'preprocess', 'split_size', 'stream_arrays', 'stream_split']
