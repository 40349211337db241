"""The lifecycle every local fake shares; it lives in the package beside the Slack stand-in
(`jit demo` runs it too)."""

from bot.playground.local_server import LocalServer

__all__ = ["LocalServer"]
