"""Experiment reports: Markdown + self-contained HTML with tables and PNG figures, and CSVs of every table.

A :class:`Report` collects blocks in order (text, tables, figures) and :meth:`Report.write` puts
``report.md``, ``report.html``, the figures' PNGs and the named tables' CSVs into one folder.  The
first named table is the experiment's headline and goes to ``results.csv``; other named tables go
to ``<name>.csv``.  Every file is written atomically, so a killed run never leaves half a report.

Example
-------
>>> report = Report("N2V on BSD68")
>>> report.add_text("Noise σ = 25, unclipped.")
>>> report.add_table([{"method": "n2v", "psnr_db": 27.7}], caption="PSNR (data_range=255)", name="table")
>>> report.write("out/")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pairless.errors import PairlessError
from pairless.io.files import atomic_path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class _Text:
    markdown: str


@dataclass(frozen=True)
class _Table:
    rows: list[dict]
    caption: str
    name: str | None


@dataclass(frozen=True)
class _Figure:
    png: bytes
    caption: str
    name: str


class Report:
    """An ordered list of text, tables and figures, written as Markdown, HTML and CSV."""

    def __init__(self, title: str):
        self.title = title
        self._blocks: list[_Text | _Table | _Figure] = []

    def add_text(self, markdown: str) -> None:
        """Append a paragraph of Markdown (shown verbatim in ``report.md``, escaped in HTML)."""
        self._blocks.append(_Text(markdown))

    def add_table(self, rows: list[dict], *, caption: str, name: str | None = None) -> None:
        """Append a table, one dict per row; the columns are the union of the rows' keys in first-seen order.

        With ``name`` the table is also written to CSV (the first named table to ``results.csv``).
        """
        if not rows:
            raise PairlessError(
                f"table {caption!r} has no rows; add at least one row before adding it to a report"
            )
        if name is not None:
            self._check_name(name, kind="table")
        self._blocks.append(_Table([dict(r) for r in rows], caption, name))

    def add_figure(self, fig_or_png_path, *, caption: str, name: str) -> None:
        """Append a figure: a matplotlib figure (rendered to PNG with Agg) or a path to a PNG file."""
        self._check_name(name, kind="figure")
        if isinstance(fig_or_png_path, (str, os.PathLike)):
            path = Path(fig_or_png_path)
            if not path.is_file():
                raise PairlessError(
                    f"figure file {str(path)!r} does not exist; pass a PNG path or a matplotlib figure"
                )
            png = path.read_bytes()
        else:
            png = _render_png(fig_or_png_path)
        self._blocks.append(_Figure(png, caption, name))

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write ``report.md``, ``report.html``, ``<figure>.png`` and the CSVs into ``out_dir``; return
        ``report.html``."""
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise PairlessError(
                f"report folder {str(out)!r} is a file; pass a folder path to write the report into"
            )
        out.mkdir(parents=True, exist_ok=True)
        csv_names = self._csv_names()
        for block in self._blocks:
            if isinstance(block, _Figure):
                _write_bytes(out / f"{block.name}.png", block.png)
            elif isinstance(block, _Table) and block.name is not None:
                _write_text(out / csv_names[block.name], _to_csv(block.rows))
        _write_text(out / "report.md", self.to_markdown(csv_names))
        html_path = out / "report.html"
        _write_text(html_path, self.to_html(csv_names))
        return html_path

    def to_markdown(self, csv_names: dict[str, str] | None = None) -> str:
        csv_names = self._csv_names() if csv_names is None else csv_names
        parts = [f"# {self.title}"]
        for block in self._blocks:
            if isinstance(block, _Text):
                parts.append(block.markdown.strip())
            elif isinstance(block, _Table):
                columns = _columns(block.rows)
                lines = [
                    f"**{block.caption}**",
                    "",
                    "| " + " | ".join(columns) + " |",
                    "| " + " | ".join("---" for _ in columns) + " |",
                ]
                lines += [
                    "| " + " | ".join(_fmt(r.get(c, "")).replace("|", "\\|") for c in columns) + " |"
                    for r in block.rows
                ]
                if block.name is not None:
                    lines += ["", f"(CSV: `{csv_names[block.name]}`)"]
                parts.append("\n".join(lines))
            else:
                parts.append(f"![{block.caption}]({block.name}.png)\n\n*{block.caption}*")
        return "\n\n".join(parts) + "\n"

    def to_html(self, csv_names: dict[str, str] | None = None) -> str:
        """The report as one HTML page; figures are embedded as data URIs so the file stands alone."""
        csv_names = self._csv_names() if csv_names is None else csv_names
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for block in self._blocks:
            if isinstance(block, _Text):
                body.append(_markdown_to_html(block.markdown))
            elif isinstance(block, _Table):
                columns = _columns(block.rows)
                head = "".join(f"<th>{e(c)}</th>" for c in columns)
                rows = "".join(
                    "<tr>" + "".join(f"<td>{e(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                    for r in block.rows
                )
                note = f" (CSV: <code>{e(csv_names[block.name])}</code>)" if block.name is not None else ""
                body.append(
                    f"<table><caption>{e(block.caption)}{note}</caption><thead><tr>{head}</tr></thead>"
                    f"<tbody>{rows}</tbody></table>"
                )
            else:
                data = base64.b64encode(block.png).decode("ascii")
                body.append(
                    f'<figure><img alt="{e(block.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{e(block.caption)}</figcaption></figure>"
                )
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
            "text-align:right}caption{text-align:left;font-weight:bold;padding:4px 0}"
            "img{max-width:100%}figcaption{font-style:italic}code{background:#f3f3f3}"
        )
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(self.title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )

    def _check_name(self, name: str, *, kind: str) -> None:
        if not _NAME.match(name):
            raise PairlessError(
                f"{kind} name {name!r} is not a safe file name; use letters, digits, '_', '-', '.'"
            )
        taken = {b.name for b in self._blocks if isinstance(b, (_Table, _Figure)) and b.name is not None}
        if name in taken:
            raise PairlessError(
                f"{kind} name {name!r} is already used in this report; give each a unique name"
            )

    def _csv_names(self) -> dict[str, str]:
        named = [b.name for b in self._blocks if isinstance(b, _Table) and b.name is not None]
        return {n: "results.csv" if i == 0 else f"{n}.csv" for i, n in enumerate(named)}


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _fmt(value) -> str:
    """Floats with 4 significant decimals for reading; CSVs keep full precision."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.4f}"
    return str(value)


def _to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _markdown_to_html(markdown: str) -> str:
    """Enough Markdown for report prose: headings, bullet lists, paragraphs, `code` and **bold**."""

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)

    out = []
    paragraphs = [p.splitlines() for p in re.split(r"\n\s*\n", markdown.strip())]
    while paragraphs:
        lines = paragraphs.pop(0)
        if not lines:
            continue
        if lines[0].startswith("#"):
            level = min(len(lines[0]) - len(lines[0].lstrip("#")) + 1, 6)
            out.append(f"<h{level}>{inline(lines[0].lstrip('#').strip())}</h{level}>")
            paragraphs.insert(0, lines[1:])
        elif all(line.lstrip().startswith(("- ", "* ")) for line in lines):
            out.append("<ul>" + "".join(f"<li>{inline(line.lstrip()[2:])}</li>" for line in lines) + "</ul>")
        else:
            out.append(f"<p>{inline(' '.join(lines))}</p>")
    return "\n".join(out)


def _render_png(fig) -> bytes:
    if not hasattr(fig, "savefig"):
        raise PairlessError(f"add_figure takes a matplotlib figure or a PNG path, not {type(fig).__name__}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # render with Agg whatever backend the figure was made under
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
