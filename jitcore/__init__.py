"""jitcore: just-in-time network access to cloud VMs (library shared by the bot and the CLI)."""

__version__ = "0.1.0"
