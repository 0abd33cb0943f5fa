"""Progress of replay, reprocess and sweep where no terminal draws a bar."""

from __future__ import annotations

import io

import pytest

from services.replay import Progress


def test_off_a_terminal_progress_is_lines_at_intervals_and_one_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()  # not a terminal, like a Job's log
    monkeypatch.setattr(Progress, "LINE_EVERY", 0.0)
    progress = Progress("replay projections", out)
    progress(250, 1000)
    progress(1000, 1000)
    progress.close()

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("replay projections: 250 of 1,000 events (25.0%), ")
    assert "s left" in lines[0]
    assert lines[1].startswith("replay projections: 1,000 of 1,000 events (100.0%)")
    assert lines[2].startswith("replay projections: 1,000 events, ")
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_off_a_terminal_nothing_is_written_between_intervals() -> None:
    out = io.StringIO()
    progress = Progress("sweep", out, unit="members")
    for done in range(0, 100, 10):
        progress(done, 100)
    assert out.getvalue() == ""  # the first line waits LINE_EVERY seconds
    progress.close()
    assert out.getvalue().startswith("sweep: 90 members, ")
