"""The third-party messages the launcher silences, and only those."""

from __future__ import annotations

import logging
import warnings

import pytest

from solo_fgsynth.launch.noise import LOGGED_NOISE, WARNED_NOISE, silence_known_noise


@pytest.fixture
def clean_filters():
    loggers = [logging.getLogger(n.source if n.source != "root" else None) for n in LOGGED_NOISE]
    saved = [list(logger.filters) for logger in loggers]
    with warnings.catch_warnings():
        yield
    for logger, filters in zip(loggers, saved, strict=True):
        logger.filters[:] = filters


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("noise", LOGGED_NOISE, ids=lambda n: n.source)
def test_each_logged_noise_is_dropped_and_its_neighbours_kept(noise, clean_filters) -> None:
    silence_known_noise()
    silence_known_noise()  # idempotent: one filter per logger
    logger = logging.getLogger(None if noise.source == "root" else noise.source)
    assert sum(type(f).__name__ == "_DropMessages" for f in logger.filters) == 1
    recorder, level = _Recorder(), logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    try:
        logger.warning(noise.starts_with + " and the rest of the message")
        logger.warning("a message a user can act on")
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
    assert recorder.messages == ["a message a user can act on"]


@pytest.mark.parametrize("noise", WARNED_NOISE, ids=lambda n: n.starts_with[:20])
def test_each_warned_noise_is_ignored_and_other_warnings_shown(noise, clean_filters) -> None:
    silence_known_noise()
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn(noise.starts_with + ", so nothing is pinned", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]


def test_every_silenced_message_says_why() -> None:
    assert all(len(noise.reason.split()) >= 8 for noise in (*LOGGED_NOISE, *WARNED_NOISE))
