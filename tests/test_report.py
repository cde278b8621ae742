"""The HTML report built from an executed workbook's summary.json (no kernel is started here)."""

from __future__ import annotations

import json
import shutil
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

from cvaia import report
from cvaia.__main__ import main

NASTY = "<script>alert('x')</script> & \"q\""


class _Page(HTMLParser):
    """Tables (rows of cell texts), links, image sources and tags of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _executed(name: str, cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _png(path: Path, color) -> None:
    Image.new("RGB", (4, 3), color).save(path)


@pytest.fixture()
def executed(tmp_path):
    """An executed workbook folder as the runner leaves it: notebooks, summary.json, figures."""
    out = tmp_path / "executed" / "smoke"
    out.mkdir(parents=True)
    figs = tmp_path / "figures"
    figs.mkdir()
    _png(figs / "p0_samples.png", "red")
    (figs / "p0_samples.pdf").write_bytes(b"%PDF-1.4 fake\n")
    _png(figs / "p1 lr&miou.png", "blue")  # odd characters: the link must still resolve
    ok_cells = [new_markdown_cell("# First"),
                new_code_cell("print('hello report')", execution_count=1,
                              outputs=[new_output("stream", name="stdout", text="hello report\n")])]
    bad_cells = [new_code_cell("x = 1", execution_count=1),
                 new_code_cell("raise ValueError(...)", execution_count=2,
                               outputs=[new_output("error", ename="ValueError", evalue=NASTY,
                                                   traceback=["ValueError: " + NASTY])])]
    nbformat.write(_executed("00_first", ok_cells), out / "00_first.ipynb")
    nbformat.write(_executed("01_broken", bad_cells), out / "01_broken.ipynb")
    nbformat.write(_executed("02_third", ok_cells), out / "02_third.ipynb")
    summary = {
        "profile": "smoke", "dataset_root": "/data/synthetic", "device": "cpu",
        "finished": "2025-01-01T12:00:00", "figures_dir": str(figs),
        "notebooks": [
            {"name": "00_first", "ok": True, "seconds": 12.34, "error": None, "failed_cell": None,
             "headlines": {"miou": 40.891, "verdicts_reproduced": 3.0, "verdicts_contradicted": 1.0,
                           "verdicts_inconclusive": 0.0},
             "timings": {"speedup": 2.345},
             "figures": [str(figs / "p0_samples.png"), "/gone/elsewhere/p1 lr&miou.png"]},
            {"name": "01_broken", "ok": False, "seconds": 1.5, "failed_cell": 2,
             "failed_cell_index": 1, "error": f"ValueError: {NASTY}", "headlines": {}, "figures": []},
            {"name": "02_third", "ok": True, "seconds": 0.25, "error": None, "failed_cell": None,
             "headlines": {NASTY: 0.5, "nan_value": float("nan")},
             "figures": [str(figs / "p9_never_written.png")]},
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return {"out": out, "figs": figs}


def _links_resolve(folder: Path) -> list[str]:
    """Every href/src of every page below ``folder``: relative, and pointing at a file."""
    targets = []
    for page in folder.rglob("*.html"):
        parsed = _Page(page.read_text(encoding="utf-8"))
        for ref in parsed.links + parsed.images:
            parts = urlsplit(ref)
            if parts.scheme in ("http", "https") or ref.startswith("#"):
                continue  # nbconvert's CDN scripts/anchors: not ours to resolve
            assert not parts.scheme and not parts.netloc and not ref.startswith("/"), ref
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_file(), f"{page.name}: {ref} -> {target} missing"
            assert target.is_relative_to(folder.resolve()), ref
            targets.append(str(target.relative_to(folder.resolve())))
    return targets


def test_index_lists_notebooks_status_time_verdicts(executed):
    index = report.build_report(executed["out"])
    assert index == executed["out"] / "report" / "index.html"
    page = _Page(index.read_text(encoding="utf-8"))
    notebooks, headlines, timed = page.tables
    assert notebooks[0] == ["notebook", "status", "time", "figures", "reproduced", "contradicted",
                            "inconclusive"]
    assert notebooks[1] == ["00_first", "ok", "12.3 s", "2", "3", "1", "0"]
    assert notebooks[2] == ["01_broken", "FAILED", "1.5 s", "0", "\u2014", "\u2014", "\u2014"]
    assert notebooks[3] == ["02_third", "ok", "0.2 s", "0", "\u2014", "\u2014", "\u2014"]
    # headline table: verdict counts are not repeated there; NaN stays visible
    assert ["00_first", "miou", "40.89"] in headlines
    assert ["02_third", NASTY, "0.5"] in headlines and ["nan_value", "nan"] in headlines
    assert ["01_broken", "\u2014", "\u2014"] in headlines
    assert not any("verdicts_" in cell for row in headlines for cell in row)
    # timed numbers (load-dependent) have their own table, not the headline one
    assert timed == [["notebook", "number", "value"], ["00_first", "speedup", "2.345"]]
    assert not any("speedup" in cell for row in headlines for cell in row)
    text = "".join(page.text)
    assert "3 notebook(s), 1 failed, 14.1 s in total" in text
    # the failure: which cell, the error, a link to the executed notebook's page
    assert f"01_broken failed at cell [2] (cell 2 of the notebook): ValueError: {NASTY}" in text
    assert "notebooks/01_broken.html" in page.links
    assert "missing figure files: p9_never_written.png" in text


def test_gallery_links_resolve_and_survive_a_zip(executed, tmp_path):
    index = report.build_report(executed["out"])
    folder = index.parent
    targets = _links_resolve(folder)
    for expected in ("figures/p0_samples.png", "figures/p0_samples.pdf", "figures/p1 lr&miou.png",
                     "notebooks/00_first.html", "notebooks/01_broken.html",
                     "notebooks/02_third.html", "summary.json", "index.html"):
        assert expected in targets, expected
    # figures keep their export names and bytes (the one found by name in figures_dir too)
    assert (folder / "figures" / "p0_samples.png").read_bytes() == \
        (executed["figs"] / "p0_samples.png").read_bytes()
    assert sorted(p.name for p in (folder / "figures").iterdir()) == \
        ["p0_samples.pdf", "p0_samples.png", "p1 lr&miou.png"]
    # zipped, moved, unpacked elsewhere: every link still resolves
    archive = shutil.make_archive(str(tmp_path / "report"), "zip", folder)
    shutil.rmtree(executed["figs"])
    elsewhere = tmp_path / "unpacked"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(elsewhere)
    assert sorted(_links_resolve(elsewhere)) == sorted(targets)


def test_everything_from_data_is_escaped(executed):
    index = report.build_report(executed["out"])
    raw = index.read_text(encoding="utf-8")
    assert NASTY not in raw and "<script" not in raw
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;" in raw
    assert "script" not in _Page(raw).tags


def test_notebook_pages(executed):
    folder = report.build_report(executed["out"]).parent
    first = (folder / "notebooks" / "00_first.html").read_text(encoding="utf-8")
    assert "hello report" in first and 'href="../index.html"' in first
    broken = (folder / "notebooks" / "01_broken.html").read_text(encoding="utf-8")
    assert "ValueError" in broken and NASTY not in broken  # nbconvert escapes the traceback too
    assert json.loads((folder / "summary.json").read_text())["profile"] == "smoke"


def test_missing_or_unrenderable_notebook_is_reported(executed):
    (executed["out"] / "02_third.ipynb").unlink()
    (executed["out"] / "00_first.ipynb").write_text("{not json", encoding="utf-8")
    page = _Page(report.build_report(executed["out"]).read_text(encoding="utf-8"))
    text = "".join(page.text)
    assert "02_third: no page \u2014 no executed notebook" in text
    assert "00_first: no page \u2014" in text
    assert "notebooks/00_first.html" not in page.links
    assert page.tables[0][1][0] == "00_first"  # still listed, without a link


def test_rebuild_replaces_only_its_own_report(executed):
    folder = report.build_report(executed["out"]).parent
    (folder / "figures" / "stale.png").write_bytes(b"old")
    report.build_report(executed["out"])
    assert not (folder / "figures" / "stale.png").exists()
    assert (folder / "index.html").is_file()
    assert [p.name for p in executed["out"].iterdir() if p.name.startswith(".report")] == []
    # a folder named "report" that the user made is never replaced
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(report.ReportError, match="not written by cvaia"):
        report.build_report(executed["out"])
    assert (folder / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in executed["out"].iterdir()) == \
        ["00_first.ipynb", "01_broken.ipynb", "02_third.ipynb", "report", "summary.json"]


def test_report_only_command(executed, tmp_path, capsys):
    assert main(["workbook", "--report-only", "--out", str(executed["out"])]) == 0
    assert str(executed["out"] / "report" / "index.html") in capsys.readouterr().out
    assert main(["workbook", "--report-only", "--out", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in err and "python -m cvaia workbook" in err


def test_format_number():
    assert report.format_number(3.0) == "3"
    assert report.format_number(40.891) == "40.89"
    assert report.format_number(1e-5) == "1e-05"
    assert report.format_number(float("nan")) == "nan"
