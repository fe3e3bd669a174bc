"""Kept for the tests that import from here: the helpers now live in `tests.harness`."""

from __future__ import annotations

from tests.harness import (
    create_topics,
    data_of,
    eventually,
    headers_of,
    read_all,
    read_to_end,
)

__all__ = ["create_topics", "data_of", "eventually", "headers_of", "read_all", "read_to_end"]
