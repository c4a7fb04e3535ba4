"""Quickstart: a small pre-activation ResNet on the scikit-learn digits, no network needed."""

from resjax.config_base import base_config


def get_config():
  config = base_config()
  config.model.depth = 20
  config.data.source = 'digits'
  return config
