"""Shared by the monitor's tests: the app on a private redis-server no worker consumes."""
from __future__ import annotations

import pytest

from support import fault_models_app


@pytest.fixture
def idle_app(private_redis):
    """Messages go to ``private_redis``, where no worker takes them: every state a test sees
    is the one the code under test wrote."""
    with fault_models_app(private_redis.url) as app:
        yield app
