"""bnlab.nn: batch norm for PyTorch, written to be read and matched against ``torch.nn``.

Modules
-------
functional   ``batch_norm`` (= ``torch.nn.functional.batch_norm``) and ``BatchNormFunction``, closed-form backward
modules      ``BatchNorm1d``, ``BatchNorm2d`` (drop-ins for torch's) and their base ``BatchNormBase``
ghost        ``GhostBatchNorm1d/2d`` and ``ghost_batch_norm``: statistics per sub-batch of the SGD batch
precise      ``recompute_batchnorm_statistics``: precise BN, equal-weight population statistics
fold         ``fold_batchnorm``, ``fold_batchnorm_sequential``: BN folded into the preceding Linear/Conv
freeze       ``freeze_batchnorm``, ``unfreeze_batchnorm``, ``is_frozen``
find         ``is_batchnorm``, ``batchnorm_layers``: torch's and bnlab's batch norm layers alike
"""

from bnlab.nn.find import batchnorm_layers, is_batchnorm
from bnlab.nn.fold import fold_batchnorm, fold_batchnorm_sequential
from bnlab.nn.freeze import freeze_batchnorm, is_frozen, unfreeze_batchnorm
from bnlab.nn.functional import BatchNormFunction, batch_norm
from bnlab.nn.ghost import GhostBatchNorm1d, GhostBatchNorm2d, ghost_batch_norm
from bnlab.nn.modules import BatchNorm1d, BatchNorm2d, BatchNormBase
from bnlab.nn.precise import recompute_batchnorm_statistics

__all__ = [
    "BatchNormFunction",
    "batch_norm",
    "BatchNormBase",
    "BatchNorm1d",
    "BatchNorm2d",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "ghost_batch_norm",
    "recompute_batchnorm_statistics",
    "fold_batchnorm",
    "fold_batchnorm_sequential",
    "freeze_batchnorm",
    "unfreeze_batchnorm",
    "is_frozen",
    "is_batchnorm",
    "batchnorm_layers",
]
