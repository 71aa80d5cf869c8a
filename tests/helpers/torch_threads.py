"""A fixture the video test modules share: import it and it applies to every test there."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread():  # type: ignore[no-untyped-def]
    """torch on one thread for the test (the video code's own setting for its non-model work), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
