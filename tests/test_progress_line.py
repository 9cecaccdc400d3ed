"""The commands' progress line: on a terminal only, after a second, never with --quiet; it shows
bytes, percentage, rate and source, and ends with a newline."""

from __future__ import annotations

import io

from kachery_client.progress import ProgressLine


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_shows_rate_and_source_on_a_terminal_after_a_second():
    out = Tty()
    line = ProgressLine("kachery-cat", stream=out)
    line(10, 100, "peer http://10.0.0.2:20432 (channel lab)")
    assert out.getvalue() == ""                     # under a second: nothing
    line.started -= 2
    line(50_000_000, 100_000_000, "peer http://10.0.0.2:20432 (channel lab)")
    line.close()
    text = out.getvalue()
    assert text.startswith("\rkachery-cat  50.0 MB of 100.0 MB (50%)") and "MB/s" in text
    assert "from peer http://10.0.0.2:20432 (channel lab)" in text and text.endswith("\n")


def test_quiet_or_piped_shows_nothing():
    for line, out in ((ProgressLine("x", stream=(t := Tty()), quiet=True), t),
                      (ProgressLine("x", stream=(p := io.StringIO())), p)):
        line.started -= 2
        line(5, 10, "somewhere")
        line.close()
        assert out.getvalue() == ""
