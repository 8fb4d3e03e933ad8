"""Shared fixtures. The helpers themselves (the tiny configuration, the test doubles) live in tests/helpers/."""

from __future__ import annotations

import pytest

from tests.helpers.tiny import TINY_OVERRIDES


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY_OVERRIDES)
