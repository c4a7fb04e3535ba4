"""A PyTorch twin of resjax's CIFAR ResNets, the baseline of the benchmarks.

The twin computes the same function as ``GatedResNet.apply`` with gates ``None``
when it holds the same weights (``load_jax_variables``), and it deletes blocks the
way a PyTorch user would: an eager forward pass that skips the branch of each
deleted block. PyTorch is optional (``requirements-bench.txt``). Importing this
module without it raises ImportError, which the benchmark turns into a skipped row.

Supported: basic units (CIFAR ResNets), option-A or projection shortcuts, pre- and
post-activation, residual and plain networks, float32.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resjax.models.resnet import GatedResNet


def _check_supported(model: GatedResNet) -> None:
  if model.unit_kind != 'basic' or model.imagenet:
    raise ValueError(f'the PyTorch twin covers CIFAR ResNets with basic units, got '
                     f'unit_kind={model.unit_kind!r}, imagenet={model.imagenet}; '
                     'benchmark a model built with resjax.models.cifar_resnet.')
  if model.shortcut not in ('option_a', 'projection'):
    raise ValueError(f'the PyTorch twin supports option_a and projection shortcuts, got '
                     f'{model.shortcut!r}.')
  if np.dtype(model.dtype) != np.float32:
    raise ValueError(f'the PyTorch twin computes in float32, but the model dtype is '
                     f'{np.dtype(model.dtype)}; benchmark a float32 model.')


def _batch_norm(features: int, model: GatedResNet) -> nn.BatchNorm2d:
  # Flax's momentum weights the old running average; PyTorch's weights the new batch.
  return nn.BatchNorm2d(features, eps=model.bn_epsilon, momentum=1.0 - model.bn_momentum)


def _conv(in_features: int, out_features: int, kernel: int, stride: int) -> nn.Conv2d:
  return nn.Conv2d(in_features, out_features, kernel, stride=stride, padding=kernel // 2,
                   bias=False)


class TorchUnit(nn.Module):
  """One basic unit; ``forward(x, deleted)`` skips the branch when ``deleted``."""

  def __init__(self, model: GatedResNet, in_features: int, features: int, stride: int,
               shortcut: str):
    super().__init__()
    self.preactivation = model.preactivation
    self.shortcut_kind = shortcut
    self.features = features
    self.stride = stride
    self.bn1 = _batch_norm(in_features if model.preactivation else features, model)
    self.conv1 = _conv(in_features, features, 3, stride)
    self.bn2 = _batch_norm(features, model)
    self.conv2 = _conv(features, features, 3, 1)
    if shortcut == 'projection':
      self.shortcut_conv = _conv(in_features, features, 1, stride)
      if not model.preactivation:
        self.shortcut_bn = _batch_norm(features, model)

  def _shortcut(self, x: torch.Tensor, activated: torch.Tensor | None) -> torch.Tensor:
    if self.shortcut_kind == 'identity':
      return x
    if self.shortcut_kind == 'option_a':
      x = x[:, :, ::self.stride, ::self.stride]
      missing = self.features - x.shape[1]
      return F.pad(x, (0, 0, 0, 0, missing // 2, missing - missing // 2))
    if self.preactivation:
      return self.shortcut_conv(activated)
    return self.shortcut_bn(self.shortcut_conv(x))

  def forward(self, x: torch.Tensor, deleted: bool = False) -> torch.Tensor:
    residual = self.shortcut_kind != 'none'
    if deleted and not residual:
      return x  # A deleted plain unit is the identity.
    if self.preactivation:
      activated = F.relu(self.bn1(x))
      if deleted:
        return self._shortcut(x, activated)
      branch = self.conv2(F.relu(self.bn2(self.conv1(activated))))
      return self._shortcut(x, activated) + branch if residual else branch
    if deleted:
      return F.relu(self._shortcut(x, None))
    branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(self._shortcut(x, None) + branch if residual else branch)


class TorchResNet(nn.Module):
  """The PyTorch twin of a CIFAR ``GatedResNet``; input images are NCHW."""

  def __init__(self, model: GatedResNet):
    super().__init__()
    _check_supported(model)
    self.preactivation = model.preactivation
    self.stem_conv = _conv(3, model.stem_width, 3, 1)
    if not model.preactivation:
      self.stem_bn = _batch_norm(model.stem_width, model)
    units = []
    in_features = model.stem_width
    for layout in model.layouts:
      width = model.widths[layout.index]
      for block in layout.blocks:
        head = block == layout.head
        stride = 2 if head and layout.index > 0 else 1
        if not model.residual:
          shortcut = 'none'
        else:
          shortcut = model.shortcut if head else 'identity'
        units.append(TorchUnit(model, in_features, width, stride, shortcut))
        in_features = width
    self.units = nn.ModuleList(units)
    self.deletable = frozenset(model.deletable_blocks)
    if model.preactivation:
      self.final_bn = _batch_norm(in_features, model)
    self.dense = nn.Linear(in_features, model.num_classes)

  def forward(self, images: torch.Tensor, deleted: Iterable[int] = ()) -> torch.Tensor:
    """Return logits; the blocks in ``deleted`` (global indices) keep only their shortcut."""
    deleted = frozenset(deleted)
    if not deleted <= self.deletable:
      raise ValueError(f'blocks {sorted(deleted - self.deletable)} cannot be deleted; '
                       f'deletable blocks: {sorted(self.deletable)}.')
    x = self.stem_conv(images)
    if not self.preactivation:
      x = F.relu(self.stem_bn(x))
    for index, unit in enumerate(self.units):
      x = unit(x, index in deleted)
    if self.preactivation:
      x = F.relu(self.final_bn(x))
    return self.dense(x.mean(dim=(2, 3)))


def _tensor(value: Any) -> torch.Tensor:
  return torch.from_numpy(np.array(value, dtype=np.float32))


def _load_conv(conv: nn.Conv2d, kernel: Any) -> None:
  # Flax kernels are [height, width, in, out]; PyTorch's are [out, in, height, width].
  conv.weight.data.copy_(_tensor(np.transpose(np.asarray(kernel), (3, 2, 0, 1))))


def _load_norm(norm: nn.BatchNorm2d, params: dict[str, Any], stats: dict[str, Any]) -> None:
  norm.weight.data.copy_(_tensor(params['scale']))
  norm.bias.data.copy_(_tensor(params['bias']))
  norm.running_mean.copy_(_tensor(stats['mean']))
  norm.running_var.copy_(_tensor(stats['var']))


def _load_unit(unit: TorchUnit, block: dict[str, Any]) -> None:
  params, stats = block['params'], block['batch_stats']
  _load_conv(unit.conv1, params['conv1']['kernel'])
  _load_conv(unit.conv2, params['conv2']['kernel'])
  _load_norm(unit.bn1, params['bn1'], stats['bn1'])
  _load_norm(unit.bn2, params['bn2'], stats['bn2'])
  if unit.shortcut_kind == 'projection':
    _load_conv(unit.shortcut_conv, params['shortcut_conv']['kernel'])
    if not unit.preactivation:
      _load_norm(unit.shortcut_bn, params['shortcut_bn'], stats['shortcut_bn'])


def torch_twin(model: GatedResNet, variables: dict[str, Any]) -> TorchResNet:
  """Build the PyTorch twin of ``model`` holding the weights in ``variables``.

  Args:
    model: a CIFAR ``GatedResNet`` (basic units).
    variables: ``{'params', 'batch_stats'}`` from ``model.init`` or a checkpoint.

  Returns:
    A ``TorchResNet`` in eval mode; ``.train()`` switches it to batch statistics.
  """
  twin = TorchResNet(model)
  params, stats = variables['params'], variables['batch_stats']
  with torch.no_grad():
    _load_conv(twin.stem_conv, params['stem']['conv']['kernel'])
    if not model.preactivation:
      _load_norm(twin.stem_bn, params['stem']['bn'], stats['stem']['bn'])
    for index, unit in enumerate(twin.units):
      _load_unit(unit, model.block_parameters(variables, index))
    if model.preactivation:
      _load_norm(twin.final_bn, params['classifier']['bn'], stats['classifier']['bn'])
    dense = params['classifier']['dense']
    twin.dense.weight.copy_(_tensor(np.asarray(dense['kernel']).T))
    twin.dense.bias.copy_(_tensor(dense['bias']))
  return twin.eval()


def to_torch_images(images: Any) -> torch.Tensor:
  """Convert NHWC images (numpy or JAX) to a contiguous NCHW float32 tensor."""
  return _tensor(np.transpose(np.asarray(images), (0, 3, 1, 2))).contiguous()
