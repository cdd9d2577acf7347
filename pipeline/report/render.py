"""One document model, two renderings: a self-contained HTML page and Markdown.

The HTML page opens offline: inline CSS, figures as base64 PNG data URIs, no scripts, fonts or links
(but anchors within the page: the table of contents). Per-run detail sits in <details> sections that
are closed until opened. The Markdown refers to the figures as PNG files in a folder beside it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Union

from pipeline.report.tables import TableData


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str = ""  # an id for the table of contents ('' for none): the heading's GitHub slug, so the
    # Markdown's contents links work too


@dataclass
class Toc:
    """Links to the anchored level-2 headings of the document, in order."""


@dataclass
class Para:
    text: str


@dataclass
class Callout:
    """A box that must not be missed: `alarm` (red) for warnings, otherwise a neutral note."""

    title: str
    text: str
    items: list[str] = field(default_factory=list)
    alarm: bool = True


@dataclass
class Table:
    data: TableData
    caption: str = ""
    numeric: bool = True  # right-align every column but the first; False: all left (key/value, prose)
    compact: bool = False  # small type and tight cells (the first screen's summary)


@dataclass
class Figure:
    name: str  # file name under the figures folder, e.g. 'uf1_by_condition.png'
    png: bytes
    caption: str


@dataclass
class Code:
    text: str
    caption: str = ""


@dataclass
class Details:
    """A collapsible section (closed on the page): `summary` is the line that opens it."""

    summary: str
    blocks: list


Block = Union[Heading, Para, Callout, Table, Figure, Code, Toc, Details]


def _walk(blocks: list) -> list:
    out = []
    for b in blocks:
        out.append(b)
        if isinstance(b, Details):
            out += _walk(b.blocks)
    return out


@dataclass
class Document:
    title: str
    blocks: list[Block]

    @property
    def figures(self) -> list[Figure]:
        return [b for b in _walk(self.blocks) if isinstance(b, Figure)]

    @property
    def anchors(self) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading) and b.anchor and b.level == 2]


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 76rem;
       margin: 1rem auto 2rem; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.5rem; margin: 0 0 0.3rem; }
h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
h2#main-table { margin-top: 0.8rem; }  /* the first screen: summary, warning, then the main table */
h3 { font-size: 1.1rem; margin-top: 1.4rem; }
body > p:first-of-type { margin: 0.3rem 0; }
table { border-collapse: collapse; margin: 0.6rem 0 1.2rem; font-variant-numeric: tabular-nums;
        display: block; max-width: 100%; overflow-x: auto; }  /* a wide table scrolls, not the page */
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; vertical-align: top; }
th { background: #f3f3f5; }
th:first-child, td:first-child, table.text th, table.text td { text-align: left; }
caption { caption-side: top; text-align: left; font-size: 0.9rem; color: #555; padding-bottom: 0.3rem; }
table.compact { font-size: 0.85rem; margin: 0.3rem 0 0.5rem; line-height: 1.3; }
table.compact td { padding: 0.05rem 0.5rem; }
h2#main-table + table { margin-top: 0.3rem; }
h2#main-table + table caption { font-size: 0.8rem; }
h2#main-table + table th, h2#main-table + table td { padding: 0.15rem 0.5rem; }
.callout { border: 3px solid #c62828; background: #fdecea; padding: 0.35rem 0.9rem; margin: 0.5rem 0;
           border-radius: 6px; font-size: 0.9rem; line-height: 1.35; }  /* compact: the first screen */
.callout h2 { display: inline; border: none; margin: 0 0.5rem 0 0; padding: 0; color: #b71c1c; font-size: 1.05rem; }
.callout:not(.note) h2::before { content: "\\26A0\\FE0E  "; }
.callout p { display: inline; margin: 0; }
.callout ul { margin: 0.15rem 0 0; padding-left: 1.2rem; }
.callout.note { border-color: #2e7d32; background: #edf7ee; }
.callout.note h2 { color: #1b5e20; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #555; }
nav.toc { background: #f6f8fa; border: 1px solid #ddd; padding: 0.4rem 1rem; margin: 1rem 0; }
nav.toc ol { margin: 0.2rem 0; padding-left: 1.4rem; columns: 2; }
details { border: 1px solid #ddd; border-radius: 4px; padding: 0.3rem 0.8rem; margin: 0.5rem 0; }
details > summary { cursor: pointer; font-weight: 600; }
table:not(.text) td { white-space: nowrap; }
table:not(.text) td.na { color: #888; font-style: italic; white-space: normal; min-width: 7rem; }
pre { background: #f6f8fa; padding: 0.7rem; overflow-x: auto; font-size: 0.85rem; }
"""


def _e(s: str) -> str:
    return html.escape(s, quote=True)


def to_html(doc: Document) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(doc.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(doc.title)}</h1>",
    ]
    parts += _html_blocks(doc, doc.blocks)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _td(cell: str) -> str:
    cls = ' class="na"' if cell.startswith("n/a") else ""
    return f"<td{cls}>{_e(cell)}</td>"


def _html_blocks(doc: Document, blocks: list) -> list[str]:
    parts: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            ident = f' id="{_e(b.anchor)}"' if b.anchor else ""
            parts.append(f"<h{b.level}{ident}>{_e(b.text)}</h{b.level}>")
        elif isinstance(b, Toc):
            items = "".join(f'<li><a href="#{_e(h.anchor)}">{_e(h.text)}</a></li>' for h in doc.anchors)
            parts.append(f'<nav class="toc"><strong>Contents</strong><ol>{items}</ol></nav>')
        elif isinstance(b, Details):
            parts.append(f"<details><summary>{_e(b.summary)}</summary>")
            parts += _html_blocks(doc, b.blocks)
            parts.append("</details>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_e(b.text)}</p>")
        elif isinstance(b, Callout):
            cls = "callout" if b.alarm else "callout note"
            items = "".join(f"<li>{_e(i)}</li>" for i in b.items)
            parts.append(
                f'<div class="{cls}" role="{"alert" if b.alarm else "note"}"><h2>{_e(b.title)}</h2>'
                f"<p>{_e(b.text)}</p>{f'<ul>{items}</ul>' if items else ''}</div>"
            )
        elif isinstance(b, Table):
            cap = f"<caption>{_e(b.caption)}</caption>" if b.caption else ""
            head = "".join(f"<th>{_e(h)}</th>" for h in b.data.header)
            thead = f"<thead><tr>{head}</tr></thead>" if any(b.data.header) else ""  # key/value: no header
            body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in b.data.rows)
            classes = ([] if b.numeric else ["text"]) + (["compact"] if b.compact else [])
            cls = f' class="{" ".join(classes)}"' if classes else ""
            parts.append(f"<table{cls}>{cap}{thead}<tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{_e(b.caption)}">'
                f"<figcaption>{_e(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Code):
            cap = f"<p>{_e(b.caption)}</p>" if b.caption else ""
            parts.append(f"{cap}<pre>{_e(b.text)}</pre>")
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {type(b).__name__}")
    return parts


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _m(s: str) -> str:
    """Escape Markdown syntax so names like `all_present` print as written."""
    return _MD_SPECIAL.sub(r"\\\1", s)


def to_markdown(doc: Document, figures_dir: str = "figures") -> str:
    return "\n\n".join([f"# {_m(doc.title)}", *_md_blocks(doc, doc.blocks, figures_dir)]) + "\n"


def _md_blocks(doc: Document, blocks: list, figures_dir: str) -> list[str]:
    parts: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {_m(b.text)}")
        elif isinstance(b, Toc):
            parts.append("\n".join(f"{i}. [{_m(h.text)}](#{h.anchor})" for i, h in enumerate(doc.anchors, 1)))
        elif isinstance(b, Details):
            parts.append(f"**{_m(b.summary)}**")
            parts += _md_blocks(doc, b.blocks, figures_dir)
        elif isinstance(b, Para):
            parts.append(_m(b.text))
        elif isinstance(b, Callout):
            lines = [f"> **{_m(b.title)}**", ">", f"> {_m(b.text)}"]
            if b.items:
                lines.append(">")
                lines += [f"> - {_m(i)}" for i in b.items]
            parts.append("\n".join(lines))
        elif isinstance(b, Table):
            lines = [f"*{_m(b.caption)}*", ""] if b.caption else []
            lines.append("| " + " | ".join(_m(h) for h in b.data.header) + " |")
            lines.append("|" + "|".join([":---"] + ["---:" if b.numeric else ":---"] * (len(b.data.header) - 1)) + "|")
            lines += ["| " + " | ".join(_m(c) for c in row) + " |" for row in b.data.rows]
            parts.append("\n".join(lines))
        elif isinstance(b, Figure):
            parts.append(f"![{_m(b.caption)}]({figures_dir}/{b.name})\n\n*{_m(b.caption)}*")
        elif isinstance(b, Code):
            fence = "```"
            parts.append((f"{_m(b.caption)}\n\n" if b.caption else "") + f"{fence}\n{b.text.rstrip()}\n{fence}")
        else:  # pragma: no cover
            raise TypeError(f"unknown block {type(b).__name__}")
    return parts
