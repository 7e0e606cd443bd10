"""The `t5x-lite` command: a thin layer over the library's Python API.

Only this package knows argparse; each subcommand's module parses its flags, calls the
library and prints. Nothing in the library imports it.
"""
