import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The trainer is a top-level folder of the repository, not part of the installed package:
# make it importable whatever the working directory of the test run.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from intsr.floatpath.convert import kernel_to_fixed  # noqa: E402 (after the path above)
from intsr.floatpath.degrade import lr_image  # noqa: E402
from intsr.online import make_training_pair  # noqa: E402
from intsr.weights import load_model  # noqa: E402

from helpers import DATA, WEIGHTS, gaussian  # noqa: E402

TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """The ``torch`` marker, added here instead of by hand: every test under tests/training
    and every test of a module that imported torch needs PyTorch (``-m "not torch"`` runs the
    engine's tests without it)."""
    for item in items:
        module = getattr(item, "module", None)
        imported = getattr(module, "torch", None)
        in_training = TESTS / "training" in Path(item.path).resolve().parents
        if in_training or (isinstance(imported, types.ModuleType)
                           and imported.__name__ == "torch"):
            item.add_marker(pytest.mark.torch)


@pytest.fixture(scope="session")
def shipped_weights():
    """The shipped default weights (float HWIO): meta-learned offline on BSDS500 + T91."""
    return load_model()[0]


@pytest.fixture(scope="session", params=["meta.npz", "pretrained_gauss.npz"])
def start_weights(request):
    """Both shipped starting points, as (file name, float HWIO weights): the meta-learned
    default (a poor SR until adapted, large gradients) and the D_meta-pretrained SR net."""
    return request.param, load_model(weights=WEIGHTS / request.param)[0]


@pytest.fixture(scope="session")
def butterfly_lr():
    """Set5 'butterfly' degraded by Eq. 1 (Gaussian sigma 1.6, x4): a 64x64 uint8 LR image."""
    return lr_image(np.asarray(Image.open(DATA / "butterfly.png").convert("RGB")), gaussian(1.6), 4)


@pytest.fixture(scope="session")
def butterfly_pair(butterfly_lr):
    """The online training pair (bicubic_up(son), LR) of the butterfly."""
    return make_training_pair(butterfly_lr, kernel_to_fixed(gaussian(1.6)), 4)
