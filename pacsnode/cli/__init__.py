"""Command-line entry point: ``pacsnode <command>``."""

from pacsnode.cli.main import main

__all__ = ["main"]
