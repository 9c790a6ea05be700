"""The test suite's own setup does what conftest.py says."""

import torch


def test_torch_runs_on_one_thread_in_every_test():
    # conftest.py's session fixture: the one place threads are pinned for the tests.
    assert torch.get_num_threads() == 1
