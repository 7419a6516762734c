"""The small embedded dataset, generated once per test process, for the data tests.

Import the fixture into a test module with ``from tests.fixtures_data import embedded_small``.
The dataset is built under pytest's session temp dir (never in ~/.cache) and memoised at module
level, so several modules importing the fixture still generate it only once per process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from s5jax.data import embedded

_ROOT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def embedded_small(tmp_path_factory) -> Path:
    """Root of ``ensure_embedded(scale="small", seed=0)`` (read-only: copy it to modify)."""
    if "small" not in _ROOT:
        base = tmp_path_factory.mktemp("embedded")
        _ROOT["small"] = embedded.ensure_embedded(base / "embedded-small-0", "small", 0)
    return _ROOT["small"]
