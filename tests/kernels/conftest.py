import numpy as np
import pytest

from kernel_data import _fill


@pytest.fixture
def fill():
    rng = np.random.default_rng(1234)
    return lambda shape, dtype, kind="random": _fill(rng, shape, dtype, kind)
