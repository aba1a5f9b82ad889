"""Fixtures shared by the component tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """Torch on one intra-op thread for the test: on 2 shared cores its threads spin against each other and the
    machine's other work, and tiny nets (char LMs, captioners) ran ~100x faster on one thread there."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
