"""`jit demo`: jit-bot, unchanged, against a Slack stand-in with a web page and an embedded EC2.

The stand-in is the one the tests use: slack_standin (the server, what it records, what a
test or the page configures) and slack_methods (the Web API methods jit calls, and the
workspace they change), on 127.0.0.1 only. workspace.py serves the page for three people,
and page_api turns what they do into the signed requests Slack would send jit-bot
(slack_requests), reading messages and views as Slack's client does (views).
"""
