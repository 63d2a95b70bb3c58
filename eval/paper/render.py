"""The report as a document and its two renderings: the building blocks a section is made of (:class:`Section` with
its paragraphs, :class:`Table`, :class:`Figure` and :class:`Video`, figure and video paths relative to the report
folder) and the functions that turn a list of sections into ``report.md`` (GitHub-flavoured Markdown) and the static
``index.html`` (escaped HTML with inline CSS). Section builders, registered with
:func:`fidec_gym.eval.paper.report.register_section`, return these blocks.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Sequence

from fidec_gym.eval.paper.text import markdown_table


# ============================================================================ report building blocks
@dataclass
class Table:
    header: list
    rows: list
    caption: str = ""


@dataclass
class Figure:
    path: str  # relative to the report folder
    caption: str


@dataclass
class Video:
    path: str  # relative to the report folder
    caption: str


@dataclass
class Section:
    """One report section: a title, paragraphs and any tables, figures and videos, in that order."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.paragraphs or self.tables or self.figures or self.videos)


# ============================================================================ rendering
def render_markdown(title: str, sections: Sequence[Section]) -> str:
    parts = [f"# {title}", ""]
    for section in sections:
        parts += [f"## {section.title}", ""]
        parts += [p + "\n" for p in section.paragraphs]
        for table in section.tables:
            if table.caption:
                parts += [f"**{table.caption}**", ""]
            parts += [markdown_table(table.header, table.rows), ""]
        for figure in section.figures:
            parts += [f"![{figure.caption}]({figure.path})", "", f"*{figure.caption}*", ""]
        for video in section.videos:
            parts += [
                f'<video controls width="480" src="{video.path}"></video>',
                "",
                f"[{video.caption}]({video.path})",
                "",
            ]
    return "\n".join(parts)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
figure { margin: 1rem 0; } img { max-width: 100%; } figcaption, caption { color: #555; font-size: 0.9rem; }
caption { text-align: left; font-weight: bold; padding: 0.25rem 0; }
code { background: #f5f5f5; padding: 0 0.2rem; }
"""


def _inline(text: str) -> str:
    """Escape text, rendering `code` spans (the only Markdown used in paragraphs)."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def render_html(title: str, sections: Sequence[Section]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        out.append(f"<section><h2>{html.escape(section.title)}</h2>")
        out += [f"<p>{_inline(p)}</p>" for p in section.paragraphs]
        for table in section.tables:
            out.append("<table>")
            if table.caption:
                out.append(f"<caption>{_inline(table.caption)}</caption>")
            out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in table.header) + "</tr>")
            for row in table.rows:
                out.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
            out.append("</table>")
        for figure in section.figures:
            out.append(
                f'<figure><img src="{html.escape(figure.path)}" alt="{html.escape(figure.caption)}">'
                f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
            )
        for video in section.videos:
            out.append(
                f'<figure><video controls preload="metadata" width="480" src="{html.escape(video.path)}">'
                f'<a href="{html.escape(video.path)}">download</a></video>'
                f"<figcaption>{html.escape(video.caption)}</figcaption></figure>"
            )
        out.append("</section>")
    out += [
        f"<footer><p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by fidec-gym.</p></footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(out)
