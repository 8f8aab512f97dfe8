"""bench.profile: py-spy's collapsed stacks read back as inclusive shares per function."""

from __future__ import annotations

from pathlib import Path

from bench import profile


def test_inclusive_shares_count_a_function_once_per_sample(tmp_path: Path) -> None:
    (tmp_path / "pyspy-1.txt").write_text(
        "handle (gunicorn/workers/base_async.py:100);view (app/views.py:10);render (app/views.py:20) 3\n"
        "handle (gunicorn/workers/base_async.py:100);view (app/views.py:12) 1\n"
        # Recursion: the function is on the stack twice in one sample, counted once.
        "handle (gunicorn/workers/base_async.py:101);walk (app/tree.py:5);walk (app/tree.py:5) 4\n"
    )
    (tmp_path / "pyspy-2.txt").write_text("handle (gunicorn/workers/base_async.py:100);view (app/views.py:10) 2\n")
    samples, ranked = profile.summarize([tmp_path / "pyspy-1.txt", tmp_path / "pyspy-2.txt"])
    assert samples == 10
    shares = dict(ranked)
    assert shares["handle (gunicorn/workers/base_async.py)"] == 1.0
    assert shares["view (app/views.py)"] == 0.6
    assert shares["render (app/views.py)"] == 0.3
    assert shares["walk (app/tree.py)"] == 0.4
    text = profile.render([tmp_path / "pyspy-1.txt"], seconds=60)
    assert "| 100.0 % | `handle (gunicorn/workers/base_async.py)` |" in text


def test_no_samples_give_an_empty_ranking(tmp_path: Path) -> None:
    (tmp_path / "pyspy-1.txt").write_text("")
    assert profile.summarize([tmp_path / "pyspy-1.txt"]) == (0, [])
