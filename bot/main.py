"""`jit-bot`: settings -> service -> Bolt app.

This version checks its settings and stops: the Slack listeners are not built yet.
Run `jit run` for the expiry engine on its own meanwhile.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

REQUIRED = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")


def missing_settings(env: Mapping[str, str]) -> list[str]:
    return [name for name in REQUIRED if not env.get(name, "").strip()]


def main() -> None:
    missing = missing_settings(os.environ)
    if missing:
        print(
            f"jit-bot cannot start: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set. Create the Slack app from "
            "manifest.yml, install it to your workspace, then export SLACK_BOT_TOKEN (the "
            "xoxb- bot token) and SLACK_SIGNING_SECRET (Basic Information > App Credentials); "
            "set SLACK_APP_TOKEN (xapp-) too for Socket Mode, or leave it unset to serve "
            "HTTP on JIT_HTTP_PORT (default 3000).",
            file=sys.stderr,
        )
        sys.exit(2)
    print(
        "jit-bot: the Slack listeners are not part of this build yet; run `jit run` for "
        "the expiry engine on its own.",
        file=sys.stderr,
    )
    sys.exit(1)


if __name__ == "__main__":
    main()
