"""The `gemini-proxy` command line: serve, demo, and the keys/users/db commands."""
from proxy.cli.main import main

__all__ = ["main"]
