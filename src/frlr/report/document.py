"""A report as a list of blocks, written once and rendered twice: Markdown and offline HTML.

The HTML is one self-contained file: inline CSS, no script, no CDN, every figure an ``<img>``
with a path relative to the report's own folder, so the folder can be copied, mailed or opened
from disk as it is.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Code", "Figure", "Heading", "Paragraph", "Table", "to_html", "to_markdown"]


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str
    muted: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Figure:
    """An image in the report folder (``filename``: relative, no directories)."""

    filename: str
    caption: str
    alt: str = ""


@dataclass
class Code:
    lines: list[str] = field(default_factory=list)
    summary: str = ""  # HTML: folded under this summary (a <details>, no script needed)


Block = Heading | Paragraph | Table | Figure | Code


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown; figures as ``![alt](file.png)`` relative to the report."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            out += [f"*{block.text}*" if block.muted else block.text, ""]
        elif isinstance(block, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            out.append("|" + "---|" * len(block.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
            if block.note:
                out += [block.note, ""]
        elif isinstance(block, Figure):
            out += [f"![{block.alt or block.caption}]({block.filename})", "", block.caption, ""]
        elif isinstance(block, Code):
            if block.summary:
                out += [block.summary, ""]
            out += ["```", *block.lines, "```", ""]
        else:  # pragma: no cover
            raise TypeError(f"not a report block: {type(block).__name__}")
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 980px; margin: 2em auto; padding: 0 1em; color: #1a1a1a; }
h1 { font-size: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #eee; }
h3 { font-size: 1.1em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; margin-top: .3em; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
.muted, .note { color: #555; font-size: .9em; }
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One offline HTML page (inline CSS, no JavaScript, images by relative path)."""
    e = html.escape
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            body.append(f"<h{level}>{e(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            css = ' class="muted"' if block.muted else ""
            body.append(f"<p{css}>{e(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{e(str(h))}</th>" for h in block.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            if block.note:
                body.append(f'<p class="note">{e(block.note)}</p>')
        elif isinstance(block, Figure):
            body.append(
                f'<figure><img src="{e(block.filename)}" alt="{e(block.alt or block.caption)}">'
                f"<figcaption>{e(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, Code):
            pre = f"<pre><code>{e(chr(10).join(block.lines))}</code></pre>"
            if block.summary:
                pre = f"<details><summary>{e(block.summary)}</summary>{pre}</details>"
            body.append(pre)
        else:  # pragma: no cover
            raise TypeError(f"not a report block: {type(block).__name__}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
