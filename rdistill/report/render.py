"""The page as blocks (headings, paragraphs, tables, figures), rendered twice, as Markdown and as self-contained
HTML (every text escaped, inline CSS, PNGs by relative name), so the two pages always say the same."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """Blocks rendered twice, as Markdown and as HTML, so the two pages always say the same."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (headers, [[cell(value) for value in row] for row in rows])))

    def figure(self, file: str, caption: str) -> None:
        self.figures.append(file)
        self.blocks.append(("figure", (file, caption)))

    def markdown(self) -> str:
        lines: list[str] = []
        for kind, payload in self.blocks:
            if kind == "heading":
                lines += [f"{'#' * payload[0]} {payload[1]}", ""]
            elif kind == "para":
                lines += [payload, ""]
            elif kind == "table":
                headers, rows = payload
                lines.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
                lines.append("|" + "|".join("---" for _ in headers) + "|")
                lines += ["| " + " | ".join(_md_cell(value) for value in row) + " |" for row in rows]
                lines.append("")
            else:
                lines += [f"![{payload[1]}]({payload[0]})", "", f"*{payload[1]}*", ""]
        return "\n".join(lines).rstrip() + "\n"

    def html(self, title: str) -> str:
        body: list[str] = []
        for kind, payload in self.blocks:
            if kind == "heading":
                body.append(f"<h{payload[0]}>{_inline_html(payload[1])}</h{payload[0]}>")
            elif kind == "para":
                body.append(f"<p>{_inline_html(payload)}</p>")
            elif kind == "table":
                headers, rows = payload
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in headers)
                cells = "".join("<tr>" + "".join(f"<td>{_inline_html(v)}</td>" for v in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            else:
                file, caption = (html.escape(part, quote=True) for part in payload)
                body.append(f'<figure><img src="{file}" alt="{caption}"><figcaption>{caption}</figcaption></figure>')
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:0.5rem 0 1rem}th,td{border:1px solid #ccc;padding:0.25rem 0.6rem;"
        "text-align:left;font-size:0.9rem}th{background:#f3f3f3}code{background:#f3f3f3;padding:0 0.2rem}"
        "figure{margin:1rem 0}img{max-width:100%}figcaption{font-size:0.85rem;color:#555}")


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _inline_html(text: str) -> str:
    """Escape everything, then turn `code` spans into <code> (the only markup the blocks use)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=True))
