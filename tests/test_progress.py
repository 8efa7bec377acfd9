"""Progress bars: in place on a terminal, a line every few percent in logs and CI (rmu.progress)."""

from __future__ import annotations

import io

from tqdm.auto import tqdm as auto_tqdm

from rmu import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_a_bar_prints_a_line_every_few_percent():
    log = io.StringIO()
    for _ in progress.bar(range(100), desc="steps", file=log):
        pass
    text = log.getvalue()
    lines = text.splitlines()
    assert 100 // progress.LOG_PERCENT - 2 <= len(lines) <= 100 // progress.LOG_PERCENT + 2
    assert "\r" not in text and text.endswith("\n") and all(line.strip() for line in lines)
    assert lines[0].startswith("steps:   0%") and lines[-1].startswith("steps: 100%")
    assert "| 50/100 " in text  # the counts in between, not only the ends


def test_without_a_terminal_a_resumed_bar_counts_from_its_start():
    log = io.StringIO()
    bar = progress.bar(range(60, 100), total=100, initial=60, desc="unlearning", file=log)
    for _ in bar:
        pass
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("unlearning:  60%") and lines[-1].startswith("unlearning: 100%")
    assert len(lines) <= 40 // progress.LOG_PERCENT + 2


def test_on_a_terminal_it_is_the_usual_bar():
    screen = Terminal()
    bar = progress.bar(range(100), desc="steps", file=screen)
    for _ in bar:
        pass
    assert type(bar) is auto_tqdm
    assert screen.getvalue().count("\r") > 1  # drawn in place


def test_disable_is_honoured_with_or_without_a_terminal():
    for stream in (io.StringIO(), Terminal()):
        for _ in progress.bar(range(100), disable=True, file=stream):
            pass
        assert stream.getvalue() == ""


def test_without_a_total_lines_are_spaced_in_time():
    log = io.StringIO()
    for _ in progress.bar((i for i in range(1000)), desc="reading", file=log):
        pass
    lines = log.getvalue().splitlines()
    assert lines[0] == "reading: 0it [00:00, ?it/s]" and lines[-1].startswith("reading: 1000it")
    assert len(lines) < 10
