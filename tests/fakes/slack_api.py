"""The Slack Web API stand-in the tests use: the one `jit demo` runs, from the package."""

from bot.playground.slack_standin import Call, SlackApiFake, SlackError

__all__ = ["Call", "SlackApiFake", "SlackError"]
