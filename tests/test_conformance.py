import pytest
import torch

import bnlab.nn
from bnlab.conformance import compare_modules


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("ours_cls,theirs_cls,sample_shape", [
    (bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d, (3,)),
    (bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d, (3, 4)),
    (bnlab.nn.BatchNorm2d, torch.nn.BatchNorm2d, (3, 4, 5)),
])
def test_bnlab_modules_match_torch_over_a_sequence(ours_cls, theirs_cls, sample_shape, momentum):
    ours = ours_cls(3, momentum=momentum, dtype=torch.float64)
    theirs = theirs_cls(3, momentum=momentum, dtype=torch.float64)
    worst = compare_modules(ours, theirs, sample_shape)
    assert set(worst) == {"output", "grad input", "grad weight", "grad bias", "running_mean", "running_var",
                          "num_batches_tracked"}
    assert max(worst.values()) < 1e-10, worst


def test_a_different_module_is_caught():
    ours = torch.nn.BatchNorm1d(3, momentum=0.2, dtype=torch.float64)
    theirs = torch.nn.BatchNorm1d(3, momentum=0.1, dtype=torch.float64)
    worst = compare_modules(ours, theirs, (3,))
    assert worst["running_mean"] > 1e-3 and worst["output"] > 1e-3  # eval steps use the differing statistics
