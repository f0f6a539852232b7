"""The command line: `clipsvd ...` or `python -m clipsvd ...` (the parser in clipsvd.cli.parser, the shared
arguments in clipsvd.cli.arguments, one module per command group)."""
from clipsvd.cli.parser import build_parser, console, main

__all__ = ["build_parser", "console", "main"]
