"""Flags that several subcommands share: the multi-process flags become distributed's settings."""

import argparse

from t5x_lite import distributed
from t5x_lite.cli.common import add_distributed_arguments, initialize_distributed


def _parse(*argv: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  add_distributed_arguments(parser)
  args = parser.parse_args(list(argv))
  args.command = "eval"  # Set by the main parser.
  return args


def test_distributed_flags_become_settings(monkeypatch):
  for name in ("T5X_LITE_COORDINATOR", "T5X_LITE_NUM_PROCESSES", "T5X_LITE_PROCESS_ID",
               "T5X_LITE_HANDSHAKE_TIMEOUT"):
    monkeypatch.delenv(name, raising=False)
  calls = []
  monkeypatch.setattr(distributed, "initialize", lambda s, label: calls.append((s, label)))
  initialize_distributed(_parse("--coordinator", "host:1234", "--num-processes", "4",
                                "--process-id", "3", "--handshake-timeout", "60"))
  initialize_distributed(_parse())
  assert calls == [
      (distributed.Settings("host:1234", 4, 3, 60), "t5x-lite eval"),
      (distributed.Settings(None, None, None, distributed.HANDSHAKE_TIMEOUT_S), "t5x-lite eval")]
