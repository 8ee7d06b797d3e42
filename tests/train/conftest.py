"""Trainer tests run torch on one thread: the runs are tiny, and on a busy 2-core machine two
OpenMP threads spin-wait on each other (a 100-step run took 10 s on 1 thread, 290 s on 2)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
