"""Fixtures of the config tests."""

import pytest
from config_helpers import EXPERIMENTS


@pytest.fixture(name="experiments_on_path")
def _experiments_on_path(monkeypatch):
  """Lets an experiment file in tmp_path import the shipped tiny experiment."""
  monkeypatch.syspath_prepend(EXPERIMENTS)
