"""`flow run`'s progress: live counts on a terminal, plain lines elsewhere."""

from __future__ import annotations

from flowlib.cli.progress import Progress


def test_the_live_line_is_drawn_from_the_counts_of_node_states():
    progress = Progress(3, live=True)
    progress.recorded("run-1")
    try:
        for name, status in [("a", "running"), ("a", "succeeded"), ("b", "cached"), ("c", "running")]:
            progress(name, status, {})
        text = progress._display.get_renderable().plain  # what the next refresh draws
        assert "run run-1" in text and "2 done (1 cached)" in text and "1 running" in text
    finally:
        progress.close("succeeded")


def test_plain_progress_prints_each_finished_node_and_a_summary(capsys):
    progress = Progress(2, live=False)
    progress.recorded("run-2")
    progress("a", "running", {})
    progress("a", "succeeded", {})
    progress("b", "failed", {})
    progress.close("failed")
    err = capsys.readouterr().err
    assert "succeeded       a" in err and "failed          b" in err
    assert "run run-2 failed: 1 succeeded, 0 cached, 1 failed" in err
