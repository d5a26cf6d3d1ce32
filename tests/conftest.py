import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # deterministic, and the CI machine has two cores shared with xdist workers


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20151502)
