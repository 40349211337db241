"""Slack's request signature, checked before Bolt sees a request.

Bolt parses a request's body (JSON, a form, a form's `payload` field) before its own
signature check runs, and a body it cannot parse raises: a 500 and an error-level traceback
for anyone who can reach `/slack/events`, signed or not. `SignedOnly` sits in front of Bolt's
WSGI handler and answers such requests itself:

    413  a body over MAX_BODY bytes (never read)
    411  no Content-Length;  400  a Content-Length that is not a number, or a short body
    401  no signature, a timestamp that is not a number or is more than 5 minutes away,
         a signature that does not match (HMAC-SHA256 of "v0:{timestamp}:{body}")
    400  signed but not what Slack sends: a content type other than a form or JSON, a body
         that is not UTF-8, a JSON body that is not an object, a form whose `payload` is not
         a JSON object

Each refusal is one WARNING line naming the reason, the remote address and the path; never
the body or a header's value. What passes goes to Bolt with the body as it came.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from bot.ops import WsgiApp
from jitcore.errors import RequestRefused

MAX_BODY = 1024 * 1024  # Slack's payloads are a few KiB; a modal's state stays far below this
MAX_SKEW = 5 * 60  # seconds between Slack's timestamp and our clock (Slack's own rule)
FORM = "application/x-www-form-urlencoded"  # slash commands, interactivity
JSON = "application/json"  # the Events API

log = logging.getLogger("jit.bot.signing")


def _unauthorized(reason: str) -> RequestRefused:
    return RequestRefused("401 Unauthorized", reason)


def _malformed(reason: str) -> RequestRefused:
    return RequestRefused("400 Bad Request", reason)


class SignedOnly:
    """WSGI middleware: POSTs to `path` reach `slack` only when Slack signed them."""

    def __init__(self, slack: WsgiApp, signing_secret: str, path: str = "/slack/events",
                 clock: Callable[[], float] = time.time) -> None:
        if not signing_secret:
            raise ValueError("the signing secret is empty")
        self._slack = slack
        self._secret = signing_secret.encode()
        self._path = path
        self._clock = clock

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != self._path:
            return self._slack(environ, start_response)  # Bolt answers these without parsing
        try:
            body = self._body(environ)
            timestamp = self._verify(environ, body)
            if _check_shape(environ.get("CONTENT_TYPE", ""), body):
                # Bolt takes any form whose text says "payload" for an interaction and
                # finds none (`/jit ... fix the payload parser` would be lost): the same
                # form with that word percent-encoded, signed again, reads the same to Bolt.
                body = body.replace(b"payload", b"p%61yload")
                environ["HTTP_X_SLACK_SIGNATURE"] = self._signature(timestamp, body)
        except RequestRefused as refusal:
            log.warning("refused a request to %s from %s: %s", self._path,
                        environ.get("REMOTE_ADDR", "?"), refusal.reason)
            data = f"{refusal.reason}\n".encode()
            start_response(refusal.status, [("Content-Type", "text/plain; charset=utf-8"),
                                            ("Content-Length", str(len(data)))])
            return [data]
        environ["wsgi.input"] = io.BytesIO(body)  # read once here; Bolt reads it again
        environ["CONTENT_LENGTH"] = str(len(body))
        return self._slack(environ, start_response)

    @staticmethod
    def _body(environ: dict[str, Any]) -> bytes:
        declared = str(environ.get("CONTENT_LENGTH") or "").strip()
        if not declared:
            raise RequestRefused("411 Length Required", "no Content-Length")
        if not (declared.isascii() and declared.isdigit()):
            raise _malformed("Content-Length is not a number")
        if len(declared) > 12 or int(declared) > MAX_BODY:  # int() refuses 4300+ digits
            raise RequestRefused("413 Content Too Large", f"body over {MAX_BODY} bytes")
        length = int(declared)
        stream = environ.get("wsgi.input")
        body = stream.read(length) if stream is not None and length else b""
        if len(body) != length:
            raise _malformed("body shorter than its Content-Length")
        return body

    def _signature(self, timestamp: str, body: bytes) -> str:
        digest = hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + body,
                          hashlib.sha256).hexdigest()
        return f"v0={digest}"

    def _verify(self, environ: dict[str, Any], body: bytes) -> str:
        """The request's timestamp, once its signature holds."""
        timestamp = str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP") or "").strip()
        signature = str(environ.get("HTTP_X_SLACK_SIGNATURE") or "").strip()
        if not timestamp or not signature:
            raise _unauthorized("no signature")
        # digits only, and few: int() would take "٣" or "1_0", and raise past 4300 digits
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
            raise _unauthorized("timestamp is not a number")
        if abs(self._clock() - int(timestamp)) > MAX_SKEW:
            raise _unauthorized("timestamp is more than 5 minutes away (a replay?)")
        if not hmac.compare_digest(self._signature(timestamp, body).encode(),
                                   signature.encode("utf-8", "replace")):
            raise _unauthorized("signature does not match")
        return timestamp


def _check_shape(content_type: str, body: bytes) -> bool:
    """Refuse what Bolt's parser would raise on (Slack itself never sends it); True for a
    form that mentions "payload" without being an interaction."""
    media = str(content_type).split(";")[0].strip().lower()
    if media not in (FORM, JSON):
        raise _malformed("content type is neither a form nor JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("body is not UTF-8") from None
    if media == JSON:
        if not _is_json_object(text):
            raise _malformed("JSON body is not an object")
        return False
    if text.startswith("{"):  # Bolt reads it as JSON, whatever its content type says
        raise _malformed("form body is JSON")
    if not text:
        raise _malformed("empty form")
    payloads = [v for k, v in parse_qsl(text, keep_blank_values=True) if k == "payload"]
    if not all(_is_json_object(p) for p in payloads):
        raise _malformed("form's payload is not a JSON object")
    return not payloads and "payload" in text


def _is_json_object(text: str) -> bool:
    if not text.startswith("{"):  # Bolt takes a JSON body for JSON only when it opens so
        return False
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        return False
