"""study.signals: SIGTERM as a stop request while a study runs, and our handler kept across a
call that installs its own (ray.init)."""

from __future__ import annotations

import os
import signal

import pytest

from study import signals


@pytest.fixture
def sigterm_restored():
    before = signal.getsignal(signal.SIGTERM)
    yield before
    signal.signal(signal.SIGTERM, before)


def test_sigterm_asks_for_a_stop_that_check_raises(sigterm_restored):
    with signals.stop_requested_on_sigterm() as stop:
        stop.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)  # handled before kill returns in the main thread
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            stop.check()
    assert signal.getsignal(signal.SIGTERM) is sigterm_restored


def test_a_handler_installed_inside_the_block_is_replaced_by_ours(sigterm_restored):
    signals.terminate_as_interrupt()
    with signals.keep_sigterm_handler():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as ray.init does with its own
    assert signal.getsignal(signal.SIGTERM) is signals.raise_interrupt
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
