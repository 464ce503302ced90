"""Logging: structlog, JSON lines when not on a terminal (or --log-format json),
readable console lines otherwise. Every event passes the masker: registered
secrets and URL passwords never reach the output."""
from __future__ import annotations

import logging
import os
import re
import sys

import orjson
import structlog

_SECRETS: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)", re.I)


def register_secret(value: str | None) -> None:
    if value and len(value) >= 3:
        _SECRETS.add(value)


def mask(text: str) -> str:
    text = _URL_PASSWORD.sub(r"\g<pre>***", text)
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, "***")
    return text


def _mask_event(_logger, _name, event: dict) -> dict:
    for k, v in event.items():
        if isinstance(v, str):
            event[k] = mask(v)
        elif isinstance(v, (list, tuple, dict)):
            event[k] = orjson.loads(mask(orjson.dumps(v, default=str).decode()))
    return event


class _LineLogger(structlog.PrintLogger):
    """Each event in ONE write(2): the load's worker processes share stderr, and a line
    written in one call of at most PIPE_BUF bytes never interleaves with another's."""

    def msg(self, message: str) -> None:
        try:
            fd = self._file.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is None:
            self._file.write(message + "\n")
            self._file.flush()
            return
        self._file.flush()
        data = (message + "\n").encode("utf-8", "backslashreplace")
        while data:
            data = data[os.write(fd, data):]

    log = debug = info = warn = warning = fatal = failure = err = error = critical = exception = msg


class _LineLoggerFactory:
    def __init__(self, stream):
        self.stream = stream

    def __call__(self, *_args) -> _LineLogger:
        return _LineLogger(self.stream)


def configure(fmt: str = "auto", level: str = "info", stream=None) -> None:
    stream = stream or sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer = (structlog.processors.JSONRenderer(serializer=lambda o, **_: orjson.dumps(o, default=str).decode())
                if json_lines else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), _mask_event, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=_LineLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
