"""The Slack layer of jit: thin. Parse, call jitcore, render."""
