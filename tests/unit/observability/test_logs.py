"""The services' log lines (:mod:`sipsec.telemetry.logs`): one JSON object per line with the one
schema, ids from the context, secrets masked; ``SIPSEC_LOG_FORMAT`` chooses the format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from sipsec.cli import configure_from
from sipsec.config import ConfigError, load
from sipsec.telemetry.logs import CONTEXT_IDS, FIELDS, configure, log_context, redact
from sipsec_location.config import LocationConfig
from sipsec_pkg.config import PkgConfig

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    # in-process tests before this one (the demo, the benchmarks) quiet the "sipsec" logger
    # itself; a service process starts with it unset, so does this test
    package = logging.getLogger("sipsec")
    saved = package.level
    package.setLevel(logging.NOTSET)
    configure("DEBUG", "json", service="pkg", domain="atlanta.com", stream=out)
    try:
        yield out
    finally:
        configure("WARNING", "text", stream=io.StringIO())
        package.setLevel(saved)


def _lines(out: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_line_is_one_object_with_the_schema(stream: io.StringIO) -> None:
    log = logging.getLogger("sipsec.pkg")
    log.info("PKG %s node %d serving", "atlanta.com", 0)
    log.warning("quote \" and newline\nin a message")
    (first, second) = _lines(stream)
    assert set(FIELDS) <= set(first) and TIME.match(first["time"])
    assert first | {"time": ""} == {"time": "", "level": "INFO", "service": "pkg", "domain": "atlanta.com",
                                    "logger": "sipsec.pkg", "event": "PKG atlanta.com node 0 serving"}
    assert second["level"] == "WARNING" and second["event"] == "quote \" and newline\nin a message"
    assert len(stream.getvalue().splitlines()) == 2  # the newline stayed inside the JSON string


def test_call_and_transaction_ids_come_from_the_context_or_extra(stream: io.StringIO) -> None:
    log = logging.getLogger("sipsec.proxy")

    async def inner() -> None:
        log.info("in a task")

    async def main() -> None:
        with log_context(call_id="c-1", transaction_id="z9hG4bK-1"):
            log.info("inside")
            await asyncio.create_task(inner())
        log.info("outside", extra={"request_id": "r-7"})

    asyncio.run(main())
    inside, task, outside = [line for line in _lines(stream) if line["logger"] == "sipsec.proxy"]
    assert inside["call_id"] == task["call_id"] == "c-1" and inside["transaction_id"] == "z9hG4bK-1"
    assert "call_id" not in outside and outside["request_id"] == "r-7"
    with pytest.raises(ValueError, match="unknown"), log_context(aor="sip:alice@atlanta.com"):
        pass
    assert set(CONTEXT_IDS) == {"call_id", "transaction_id", "request_id"}


def test_an_exception_is_its_type_and_stack_in_the_same_line(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("token=abc123 went wrong")
    except RuntimeError:
        logging.getLogger("sipsec.location").exception("store failed")
    (line,) = _lines(stream)
    assert line["exc_type"] == "RuntimeError" and "Traceback" in line["stack"]
    assert "abc123" not in json.dumps(line) and "token=[redacted]" in line["stack"]


@pytest.mark.parametrize(("text", "secret"), [
    ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
    ("login password=hunter2 for alice", "hunter2"),
    ("{'token': 'Zm9vYmFy'}", "Zm9vYmFy"),
    ('secret="s3 cr3t"', "s3 cr3t"),
])
def test_secrets_shaped_values_are_masked(text: str, secret: str, stream: io.StringIO) -> None:
    assert secret not in redact(text)
    logging.getLogger("sipsec.gateway").info("%s", text)
    assert secret not in stream.getvalue()


def test_the_format_is_a_setting_of_every_service_json_by_default() -> None:
    assert load(PkgConfig, {}).log_format == "json"
    assert load(LocationConfig, {"SIPSEC_LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(ConfigError, match="SIPSEC_LOG_FORMAT"):
        load(LocationConfig, {"SIPSEC_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError, match="json or text"):
        configure("INFO", "xml")


def test_text_format_and_configure_from_a_service_config(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        configure_from(load(LocationConfig, {"SIPSEC_LOG_FORMAT": "text"}), "location")
        logging.getLogger("sipsec.location").warning("plain line")
        assert re.search(r" WARNING sipsec.location: plain line$", capsys.readouterr().err.strip())
        configure_from(load(PkgConfig, {"SIPSEC_PKG_DOMAIN": "atlanta.com"}), "pkg")
        logging.getLogger("sipsec.pkg").warning("json line")
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["service"], line["domain"], line["event"]) == ("pkg", "atlanta.com", "json line")
    finally:
        configure("WARNING", "text", stream=io.StringIO())
