import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core box intra-op
    # threads contend badly (an order of magnitude slower).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
