"""The `ferlab` command: one module per command group."""

from ferlab.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
