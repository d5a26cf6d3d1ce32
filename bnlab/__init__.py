"""bnlab: the helper library behind a Jupyter course on batch normalization.

Modules
-------
functional   numpy batch norm: training forward, inference, staged and fused backward; layer/group norm
layers       numpy ``BatchNorm`` layer with PyTorch's constructor, modes, buffers and state_dict keys
gradcheck    numerical gradients, relative error, and a gradient check that cannot be fooled
"""

__version__ = "0.1.0"
