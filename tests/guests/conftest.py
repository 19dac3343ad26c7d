"""Fixtures for the guest tests."""

from .world import followers

__all__ = ["followers"]
