"""How the processes log: lines for people, or JSON lines for log shippers.

LOYALTY_LOG_FORMAT=json writes one JSON object a line (`at`, `level`, `logger`, `message`,
and `error` with the traceback when there is one), which Loki, Elasticsearch or Cloud
Logging take without parsing rules; the default is a plain line.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

PLAIN = "%(asctime)s %(name)s %(levelname)s %(message)s"
FORMATS = ("text", "json")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(log_format: str | None) -> None:
    chosen = (log_format or "text").strip().lower()
    if chosen not in FORMATS:
        raise ValueError(f"LOYALTY_LOG_FORMAT must be text or json, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if chosen == "json" else logging.Formatter(PLAIN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
