"""Identifiers registered with the redactor never reach a log line, tracebacks included."""

from __future__ import annotations

import logging

from cspine.node.redact import Redactor

UID = "1.2.826.0.1.3680043.8.498.77"


def test_log_records_and_tracebacks_are_redacted(caplog):
    redactor = Redactor()
    redactor.add(UID, "study 0a1b2c3d4e5f")
    redactor.add("Doe^Jane", "<patient>")
    redactor.add("7", "<patient>")  # too short to hide without blanking every digit
    caplog.handler.addFilter(redactor)
    try:
        log = logging.getLogger("cspine.test_redact")
        log.warning("%s: no vertebra found for Doe^Jane (7 slices)", UID)
        try:
            raise ValueError(f"StudyInstanceUID {UID} was already predicted")
        except ValueError:
            log.error("failed", exc_info=True)
    finally:
        caplog.handler.removeFilter(redactor)
    text = caplog.text
    assert UID not in text and "Doe^Jane" not in text
    assert "study 0a1b2c3d4e5f: no vertebra found for <patient> (7 slices)" in text
    assert "ValueError: StudyInstanceUID study 0a1b2c3d4e5f was already predicted" in text
    # a longer UID that merely starts with a registered one is not half-replaced
    assert redactor.redact(UID + "1") == UID + "1"


def test_install_covers_the_root_handlers_and_the_last_resort_one():
    redactor = Redactor()
    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        redactor.install()
        assert redactor in handler.filters and redactor in logging.lastResort.filters
        redactor.uninstall()
        assert redactor not in handler.filters and redactor not in logging.lastResort.filters
    finally:
        root.removeHandler(handler)
        redactor.uninstall()
