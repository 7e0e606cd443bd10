"""Shared fixtures: the python_docs corpus and a small vocabulary, built once per test session."""

import dataclasses

import pytest
from data_helpers import VOCAB_PIECES

from t5x_lite.config import DataConfig
from t5x_lite.data import get_vocabulary


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> str:
  """A data_dir holding python_docs (built automatically on first use)."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def base_config(corpus_dir) -> DataConfig:
  return DataConfig(data_dir=corpus_dir, vocab_train_size=VOCAB_PIECES, inputs_length=128,
                    targets_length=32, prefetch=2)


@pytest.fixture(scope="session")
def vocab(base_config):
  return get_vocabulary(base_config)


@pytest.fixture
def config(base_config) -> DataConfig:
  """A fresh copy each test may change."""
  return dataclasses.replace(base_config)
