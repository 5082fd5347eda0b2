"""The README's tour runs as written (documentation that cannot silently go stale)."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_tour_runs(capsys, monkeypatch):
    import fastconv._parallel
    monkeypatch.setattr(fastconv._parallel, "_requested", None)   # the tour sets a count
    text = README.read_text()
    tour = re.search(r"## A short tour\n\n```python\n(.*?)```", text, re.S)
    assert tour, "README.md lost its tour"
    exec(compile(tour.group(1), "README.md (tour)", "exec"), {})
    assert "fastconv" in capsys.readouterr().out   # the tour ends with show_config()
