"""pytest configuration: the --update-golden flag."""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite golden IR files with current output")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")
