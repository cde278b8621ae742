"""The workbook's HTML report: one page per executed notebook and an index to open first.

:func:`build_report` reads the ``summary.json`` that :func:`cvaia.workbook.run_workbook`
writes next to the executed notebooks (``runs/executed/<profile>/``) and writes::

    <executed dir>/report/index.html         headline numbers, verdict counts, run times,
                                             failures and a figure gallery
    <executed dir>/report/notebooks/NN_name.html   each executed notebook (nbconvert HTML)
    <executed dir>/report/figures/<name>.png|pdf   copies of the notebooks' figure exports
    <executed dir>/report/summary.json       the summary the report was built from

Every link is relative and the figures are copied, so the ``report`` folder can be zipped
and opened anywhere; figure files keep their stable export names (for LaTeX reports).
Everything taken from the summary or the notebooks is HTML-escaped. A rebuild replaces the
previous report as a whole (it is built aside and swapped in); a ``report`` folder that was
not written by this module is never replaced.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from urllib.parse import quote

from . import paths

#: Folder of the report, below the executed notebooks' folder.
REPORT_DIRNAME = "report"
#: File that marks a folder as written by :func:`build_report` (so it may be replaced).
MARKER = ".cvaia-report"
#: Headline keys holding a notebook's verdict counts (see ``cvaia.experiments.verdicts``).
VERDICT_KEYS = ("verdicts_reproduced", "verdicts_contradicted", "verdicts_inconclusive")
#: Headline keys of the measured / counted split (kept out of the headline-number table too).
VERDICT_SPLIT_KEYS = ("verdicts_measured_conclusive", "verdicts_measured_total", "verdicts_counted")
MISSING = "\u2014"  # an em dash: no value

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1a7f37; font-weight: bold; }
.failed { color: #cf222e; font-weight: bold; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; width: 22em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; word-break: break-all; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


class ReportError(ValueError):
    """The report cannot be built: no summary, an unreadable summary, a foreign folder."""


# ---- helpers --------------------------------------------------------------------------------
def _e(value: object) -> str:
    """HTML-escape any value (quotes included, so it is also safe inside attributes)."""
    return html.escape(str(value), quote=True)


def _href(*parts: str) -> str:
    """A relative URL from path parts (each percent-encoded), escaped for an attribute."""
    return _e("/".join(quote(p) for p in parts))


def format_number(value: float) -> str:
    """A headline number for a table: integers as integers, else four significant digits."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _safe_name(name: object) -> str:
    """A notebook or figure name usable as one file name (no folders)."""
    text = Path(str(name)).name
    if text in ("", ".", ".."):
        raise ReportError(f"summary.json: bad name {name!r}")
    return text


def read_summary(executed_dir: str | os.PathLike) -> dict:
    """The runner's ``summary.json`` of ``executed_dir``; a clear :class:`ReportError` otherwise."""
    path = Path(executed_dir) / "summary.json"
    if not path.is_file():
        raise ReportError(f"no {path}: execute the notebooks first (python -m cvaia workbook "
                          f"--profile <profile>) or pass the folder of an executed workbook")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("notebooks"), list):
        raise ReportError(f"{path}: expected an object with a 'notebooks' list")
    return summary


def _find_figure(recorded: str, figures_dirs: list[Path]) -> Path | None:
    """The PNG ``recorded`` in the summary, or the file of that name in a figures folder."""
    path = Path(recorded)
    if path.is_file():
        return path
    for folder in figures_dirs:
        candidate = folder / path.name
        if candidate.is_file():
            return candidate
    return None


# ---- pages ----------------------------------------------------------------------------------
def _notebook_page(source: Path, target: Path, exporter) -> str | None:
    """Write the HTML page of one executed notebook; return why it failed, or None."""
    try:
        body, _ = exporter.from_filename(str(source))
    except Exception as exc:  # an unreadable or half-written notebook must not stop the report
        return f"{type(exc).__name__}: {exc}"
    back = '<p style="margin:1em"><a href="../index.html">&larr; workbook report</a></p>'
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + back, body, count=1)
    target.write_text(body, encoding="utf-8")
    return None


def _status_cell(nb: dict) -> str:
    return '<td class="ok">ok</td>' if nb.get("ok") else '<td class="failed">FAILED</td>'


def _where(nb: dict) -> str:
    if nb.get("failed_cell") is not None:
        text = f"cell [{nb['failed_cell']}]"
        if nb.get("failed_cell_index") is not None:
            text += f" (cell {int(nb['failed_cell_index']) + 1} of the notebook)"
        return text
    return "execution"


def _index_html(summary: dict, rows: list[dict]) -> str:
    title = f"cvaia workbook report \u2014 profile {summary.get('profile', '?')}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{_e(title)}</h1>", "<p>"]
    for key, label in (("finished", "finished"), ("dataset_root", "data"), ("device", "device")):
        if summary.get(key) not in (None, ""):
            out.append(f"{label}: <code>{_e(summary[key])}</code><br>")
    total = sum(float(r["nb"].get("seconds") or 0.0) for r in rows)
    failed = sum(not r["nb"].get("ok") for r in rows)
    out.append(f"{len(rows)} notebook(s), {failed} failed, {total:.1f} s in total "
               f'(<a href="summary.json">summary.json</a>)</p>')
    if (summary.get("budget") or {}).get("text"):  # minutes and probe units (cvaia.workbook.budget)
        out.append(f"<p>{_e(summary['budget']['text'])}</p>")
    if summary.get("overrides"):
        out.append("<p>parameters: <code>" + _e(", ".join(f"{k}={v!r}" for k, v in summary["overrides"].items()))
                   + "</code></p>")

    # notebooks: status, time, verdicts
    out.append("<h2>Notebooks</h2><table><tr><th>notebook</th><th>status</th><th>time</th>"
               "<th>figures</th><th>reproduced</th><th>contradicted</th><th>inconclusive</th></tr>")
    for r in rows:
        nb = r["nb"]
        name = _e(r["name"])
        link = f'<a href="{_href("notebooks", r["page"])}">{name}</a>' if r["page"] else name
        headlines = nb.get("headlines") or {}
        verdicts = "".join(
            f'<td class="num">{_e(format_number(headlines[k])) if k in headlines else MISSING}</td>'
            for k in VERDICT_KEYS)
        out.append(f"<tr><td>{link}</td>{_status_cell(nb)}"
                   f'<td class="num">{float(nb.get("seconds") or 0.0):.1f} s</td>'
                   f'<td class="num">{len(r["figures"])}</td>{verdicts}</tr>')
    out.append("</table>")

    # failures
    failures = [r for r in rows if not r["nb"].get("ok") or r["page_error"]]
    if failures:
        out.append("<h2>Failures</h2><ul>")
        for r in failures:
            nb = r["nb"]
            if not nb.get("ok"):
                out.append(f"<li><b>{_e(r['name'])}</b> failed at {_e(_where(nb))}: "
                           f"<code>{_e(nb.get('error') or 'unknown error')}</code>")
                if r["page"]:
                    out.append(f' \u2014 <a href="{_href("notebooks", r["page"])}">'
                               f"the executed notebook</a>")
                out.append("</li>")
            if r["page_error"]:
                out.append(f"<li><b>{_e(r['name'])}</b>: no page \u2014 "
                           f"<code>{_e(r['page_error'])}</code></li>")
        out.append("</ul>")

    out.extend(_verdict_tables(rows))

    # headline numbers (the verdict counts are in the notebooks table)
    out.append("<h2>Headline numbers</h2><table><tr><th>notebook</th><th>number</th>"
               "<th>value</th></tr>")
    for r in rows:
        items = [(k, v) for k, v in (r["nb"].get("headlines") or {}).items()
                 if k not in VERDICT_KEYS + VERDICT_SPLIT_KEYS]
        if not items:
            out.append(f"<tr><td>{_e(r['name'])}</td><td>{MISSING}</td><td>{MISSING}</td></tr>")
            continue
        for i, (key, value) in enumerate(items):
            first = f'<td rowspan="{len(items)}">{_e(r["name"])}</td>' if i == 0 else ""
            out.append(f'<tr>{first}<td>{_e(key)}</td><td class="num">'
                       f"{_e(format_number(value))}</td></tr>")
    out.append("</table>")
    timed = [(r["name"], k, v) for r in rows for k, v in (r["nb"].get("timings") or {}).items()]
    if timed:
        out.append("<h2>Timed on this machine</h2><p>Speed-ups, time ratios and data-wait shares depend on "
                   "the machine's load, so two executions differ here (and only here).</p>"
                   "<table><tr><th>notebook</th><th>number</th><th>value</th></tr>")
        for name, key, value in timed:
            out.append(f'<tr><td>{_e(name)}</td><td>{_e(key)}</td><td class="num">'
                       f"{_e(format_number(value))}</td></tr>")
        out.append("</table>")

    # gallery
    out.append("<h2>Figures</h2>")
    for r in rows:
        if not r["figures"] and not r["missing"]:
            continue
        out.append(f"<h3>{_e(r['name'])}</h3>")
        if r["figures"]:
            out.append('<div class="gallery">')
        for png, pdf in r["figures"]:
            stem = png.rsplit(".", 1)[0]
            pdf_link = f' \u00b7 <a href="{_href("figures", pdf)}">PDF</a>' if pdf else ""
            out.append(f'<figure><a href="{_href("figures", png)}"><img src="{_href("figures", png)}" '
                       f'alt="{_e(stem)}" loading="lazy"></a><figcaption>{_e(stem)} \u00b7 '
                       f'<a href="{_href("figures", png)}">PNG</a>{pdf_link}</figcaption></figure>')
        if r["figures"]:
            out.append("</div>")
        if r["missing"]:
            out.append(f"<p>missing figure files: {_e(', '.join(r['missing']))}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---- the report -----------------------------------------------------------------------------
def _verdict_tables(rows) -> list[str]:
    """Every notebook's verdicts: measured findings (from trained runs) and, apart, the counted
    ones (arithmetic on parameters and FLOPs), with estimate, interval, test and n per arm."""
    def table(title: str, records: list[tuple[str, dict]]) -> list[str]:
        html = [f"<h3>{_e(title)}</h3><table><tr><th>notebook</th><th>id</th><th>claim</th><th>outcome</th>"
                "<th>estimate</th><th>interval</th><th>test</th><th>n</th></tr>"]
        for name, v in records:
            ci = v.get("ci")
            ci_text = (f"[{format_number(ci[0])}, {format_number(ci[1])}] ({float(v.get('ci_level') or 0):.0%})"
                       if ci and None not in ci else MISSING)
            est = v.get("estimate")
            html.append(f"<tr><td>{_e(name)}</td><td><code>{_e(v.get('id', ''))}</code></td>"
                        f"<td>{_e(v.get('claim', ''))}</td><td>{_e(v.get('outcome', ''))}</td>"
                        f'<td class="num">{_e(format_number(est)) if est is not None else MISSING}</td>'
                        f'<td class="num">{_e(ci_text)}</td><td>{_e(v.get("test", ""))}</td>'
                        f'<td class="num">{_e(" vs ".join(str(k) for k in v.get("n") or [])) or MISSING}</td></tr>')
        html.append("</table>")
        return html

    measured = [(r["name"], v) for r in rows for v in r["nb"].get("verdicts") or [] if v.get("kind") != "counted"]
    counted = [(r["name"], v) for r in rows for v in r["nb"].get("verdicts") or [] if v.get("kind") == "counted"]
    if not measured and not counted:
        return []
    out = ["<h2>Verdicts</h2>"]
    if measured:
        conclusive = sum(v.get("outcome") != "inconclusive at this scale" for _, v in measured)
        out += table(f"Measured findings ({conclusive} of {len(measured)} conclusive)", measured)
    if counted:
        out += table("Arithmetic (counted parameters and FLOPs; not measured findings)", counted)
    return out


def build_report(executed_dir: str | os.PathLike,
                 figures_dir: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of the executed workbook in ``executed_dir``; return its index.

    ``figures_dir`` is where figure files are looked up when the path recorded in the
    summary no longer exists (default: the summary's ``figures_dir``, then
    :func:`cvaia.paths.figures_dir`).
    """
    from nbconvert import HTMLExporter

    executed_dir = Path(executed_dir).expanduser().resolve()
    summary = read_summary(executed_dir)
    final = executed_dir / REPORT_DIRNAME
    if final.exists() and not (final / MARKER).is_file():
        raise ReportError(f"{final} exists and was not written by cvaia's report; "
                          f"move it away to build the report there")
    lookup = [Path(figures_dir).expanduser()] if figures_dir else []
    if summary.get("figures_dir"):
        lookup.append(Path(summary["figures_dir"]))
    lookup.append(paths.figures_dir())

    work = executed_dir / f".report-{uuid.uuid4().hex[:12]}"
    work.mkdir()  # (not mkdtemp: the report keeps the user's umask, not mode 0700)
    try:
        (work / "notebooks").mkdir()
        (work / "figures").mkdir()
        exporter = HTMLExporter()
        rows = []
        for nb in summary["notebooks"]:
            name = _safe_name(nb.get("name", "?"))
            row = {"nb": nb, "name": name, "page": None, "page_error": None,
                   "figures": [], "missing": []}
            executed = executed_dir / f"{name}.ipynb"
            if executed.is_file():
                row["page_error"] = _notebook_page(executed, work / "notebooks" / f"{name}.html",
                                                   exporter)
                if row["page_error"] is None:
                    row["page"] = f"{name}.html"
            else:
                row["page_error"] = f"no executed notebook {executed}"
            for recorded in nb.get("figures") or []:
                png = _find_figure(str(recorded), lookup)
                if png is None:
                    row["missing"].append(Path(str(recorded)).name)
                    continue
                shutil.copy2(png, work / "figures" / png.name)
                pdf = png.with_suffix(".pdf")
                if pdf.is_file():
                    shutil.copy2(pdf, work / "figures" / pdf.name)
                row["figures"].append((png.name, pdf.name if pdf.is_file() else None))
            rows.append(row)
        shutil.copy2(executed_dir / "summary.json", work / "summary.json")
        (work / "index.html").write_text(_index_html(summary, rows), encoding="utf-8")
        (work / MARKER).write_text("written by cvaia.report.build_report; rebuilt as a whole\n",
                                   encoding="utf-8")
        old = None
        if final.exists():
            old = executed_dir / f".report-old-{uuid.uuid4().hex[:12]}"
            final.rename(old)
        try:
            work.rename(final)
        except OSError:
            if old is not None:
                old.rename(final)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final / "index.html"
