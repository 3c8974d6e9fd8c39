#!/usr/bin/env python3
"""Checks relative links in Markdown files and in built HTML (an mdBook).

    python3 scripts/check-links.py docs/book README.md ARCHITECTURE.md docs/src

A Markdown file argument: every relative link and image `[..](path#frag)`
(and reference definitions, and `href`/`src` of inline HTML) must name a
file or folder that exists, relative to the Markdown file; a fragment into a
Markdown file must match one of its headings' slugs (GitHub's rule, which
mdBook's ids agree with for plain headings) or an explicit `id`/`name`.
Links inside fenced code blocks and code spans are not links.

A folder argument: every `.html` file under it is parsed, and every relative
`href`/`src` must name a file that exists (a folder: its `index.html`); a
fragment must be the `id` (or `<a name>`) of an element of the target. Every
`.md` file under it is checked as Markdown, so the book's sources can be
checked before the book is built.

Absolute URLs (`http:`, `https:`, `mailto:` and any other scheme) and
protocol-relative `//host` links are not checked. Prints each broken link
as `file: link -> reason` and exits 1 if there is any; otherwise prints how
many links were checked and exits 0. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import fnmatch
import html
import html.parser
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass
class Report:
    checked: int = 0
    broken: list[str] = field(default_factory=list)

    def fail(self, file: Path, link: str, reason: str) -> None:
        self.broken.append(f"{display(file)}: {link} -> {reason}")


def display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def is_external(target: str) -> bool:
    return bool(SCHEME.match(target)) or target.startswith("//")


# --------------------------------------------------------------------- Markdown

FENCE = re.compile(r"^(?P<indent> {0,3}|\s*)(?P<fence>`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
# [text](target) and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(
    r"!?\[(?P<text>(?:[^\[\]\\]|\\.|\[[^\[\]]*\])*)\]"
    r"\(\s*(?P<target><[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
REF_DEF = re.compile(r"^ {0,3}\[(?P<label>[^\]]+)\]:\s*(?P<target><[^>]*>|\S+)", re.M)
HTML_ATTR = re.compile(
    r"<(?:a|img|source|link|script|iframe)\b[^>]*?\s(?:href|src)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')",
    re.I,
)
HTML_ID = re.compile(r"<[A-Za-z][^>]*?\s(?:id|name)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.I)
ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(?P<text>.*?)(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def strip_code(text: str) -> tuple[str, list[bool]]:
    """Blanks fenced code blocks (keeping line count) and marks their lines."""
    lines = text.split("\n")
    in_code: list[bool] = []
    fence: str | None = None
    out = []
    for line in lines:
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group("fence")
                out.append("")
                in_code.append(True)
                continue
            out.append(line)
            in_code.append(False)
        else:
            stripped = line.strip()
            if (
                stripped.startswith(fence[0] * len(fence))
                and set(stripped) <= {fence[0]}
            ):
                fence = None
            out.append("")
            in_code.append(True)
    return "\n".join(out), in_code


def blank_code_spans(text: str) -> str:
    """Replaces code spans with spaces of the same length: no links inside."""
    return CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)


def plain_heading(text: str) -> str:
    """The text of a heading as rendered: markup and inline HTML removed."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links, images
    parts = []
    last = 0
    for m in CODE_SPAN.finditer(text):  # code spans are kept as written
        parts.append(_plain_prose(text[last : m.start()]))
        parts.append(m.group(2).strip(" ") if m.group(2).strip() else m.group(2))
        last = m.end()
    parts.append(_plain_prose(text[last:]))
    return "".join(parts).strip()


def _plain_prose(text: str) -> str:
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)  # emphasis markers
    text = re.sub(r"\\(.)", r"\1", text)  # escapes
    return html.unescape(text)


def slug(text: str) -> str:
    """GitHub's heading anchor (mdBook's `normalize_id` agrees on ASCII)."""
    out = []
    for ch in plain_heading(text).lower():
        if ch.isalnum() or ch in "-_":
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


_anchor_cache: dict[Path, set[str]] = {}


def markdown_anchors(path: Path) -> set[str]:
    if path in _anchor_cache:
        return _anchor_cache[path]
    text, _ = strip_code(path.read_text(encoding="utf-8"))
    anchors: set[str] = set()
    counts: dict[str, int] = {}

    def add(base: str) -> None:
        n = counts.get(base, 0)
        anchors.add(base if n == 0 else f"{base}-{n}")
        counts[base] = n + 1

    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = ATX.match(line)
        if m:
            add(slug(m.group("text")))
            continue
        if (
            i > 0
            and SETEXT.match(line)
            and lines[i - 1].strip()
            and not ATX.match(lines[i - 1])
            and not lines[i - 1].lstrip().startswith(("-", "*", "|", ">"))
        ):
            add(slug(lines[i - 1].strip()))
    for m in HTML_ID.finditer(text):
        anchors.add(m.group(1) if m.group(1) is not None else m.group(2))
    _anchor_cache[path] = anchors
    return anchors


def markdown_links(path: Path) -> list[str]:
    text, _ = strip_code(path.read_text(encoding="utf-8"))
    text = blank_code_spans(text)
    links = []
    for m in INLINE_LINK.finditer(text):
        links.append(m.group("target"))
    for m in REF_DEF.finditer(text):
        links.append(m.group("target"))
    for m in HTML_ATTR.finditer(text):
        links.append(m.group(1) if m.group(1) is not None else m.group(2))
    return links


def split_target(target: str) -> tuple[str, str]:
    """A link's file (without its query) and fragment, percent-decoded."""
    file_part, _, frag = target.partition("#")
    return urllib.parse.unquote(file_part.split("?", 1)[0]), urllib.parse.unquote(frag)


def check_markdown(path: Path, report: Report) -> None:
    for raw in markdown_links(path):
        target = raw.strip()
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1].strip()
        if not target or is_external(target):
            continue
        report.checked += 1
        file_part, frag = split_target(target)
        if file_part:
            if file_part.startswith("/"):
                report.fail(path, raw, "an absolute path: write it relative to the file")
                continue
            dest = (path.parent / file_part).resolve()
            if not dest.exists():
                report.fail(path, raw, f"{display(dest)} does not exist")
                continue
        else:
            dest = path.resolve()
        if not frag:
            continue
        if dest.is_dir():
            report.fail(path, raw, "a fragment into a folder")
        elif dest.suffix.lower() in (".md", ".markdown"):
            if frag not in markdown_anchors(dest):
                report.fail(path, raw, f"no heading with the anchor #{frag} in {display(dest)}")
        elif dest.suffix.lower() in (".html", ".htm"):
            if frag not in html_ids(dest):
                report.fail(path, raw, f"no element with id {frag!r} in {display(dest)}")
        # A fragment into another kind of file (a line of source) is not checked.


# ------------------------------------------------------------------------- HTML


class _Collector(html.parser.HTMLParser):
    LINK_ATTRS = {"href", "src"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)
            if tag == "base" and name == "href":
                self.base = value
            elif name in self.LINK_ATTRS:
                self.links.append(value)
            elif name == "srcset":
                for part in value.split(","):
                    url = part.strip().split(" ")[0]
                    if url:
                        self.links.append(url)

    handle_startendtag = handle_starttag


_html_cache: dict[Path, _Collector] = {}


def parse_html(path: Path) -> _Collector:
    if path not in _html_cache:
        c = _Collector()
        c.feed(path.read_text(encoding="utf-8", errors="replace"))
        c.close()
        _html_cache[path] = c
    return _html_cache[path]


def html_ids(path: Path) -> set[str]:
    return parse_html(path).ids


def check_html(path: Path, root: Path, report: Report) -> None:
    page = parse_html(path)
    base_dir = path.parent
    if page.base and not is_external(page.base):
        b = urllib.parse.unquote(page.base.split("#", 1)[0].split("?", 1)[0])
        # An absolute base (mdBook's 404 page: `/`) is the site root: the folder given.
        base_dir = (root / b.lstrip("/")) if b.startswith("/") else (path.parent / b)
        if not b.endswith("/") and b:
            base_dir = base_dir.parent
    for raw in page.links:
        target = raw.strip()
        if not target or is_external(target) or target.startswith(("javascript:", "data:")):
            continue
        report.checked += 1
        file_part, frag = split_target(target)
        if file_part:
            if file_part.startswith("/"):
                dest = (root / file_part.lstrip("/")).resolve()
            else:
                dest = (base_dir / file_part).resolve()
            if dest.is_dir():
                dest = dest / "index.html"
            if not dest.exists():
                report.fail(path, raw, f"{display(dest)} does not exist")
                continue
        else:
            dest = path.resolve()
        if frag and dest.suffix.lower() in (".html", ".htm"):
            if frag not in html_ids(dest):
                report.fail(path, raw, f"no element with id {frag!r} in {display(dest)}")


# ------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Check relative links in Markdown files and in folders of HTML or Markdown."
    )
    parser.add_argument("paths", nargs="+", type=Path, help="Markdown files, or folders")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files whose path (relative to the folder given) matches GLOB; repeatable",
    )
    args = parser.parse_args(argv)
    report = Report()
    files = 0
    for arg in args.paths:
        if arg.is_dir():
            root = arg.resolve()
            for dirpath, dirnames, filenames in os.walk(arg):
                dirnames.sort()
                for name in sorted(filenames):
                    p = Path(dirpath) / name
                    rel = p.relative_to(arg).as_posix()
                    if any(fnmatch.fnmatch(rel, g) for g in args.exclude):
                        continue
                    suffix = p.suffix.lower()
                    if suffix in (".html", ".htm"):
                        check_html(p, root, report)
                        files += 1
                    elif suffix in (".md", ".markdown"):
                        check_markdown(p, report)
                        files += 1
        elif arg.is_file():
            if arg.suffix.lower() in (".html", ".htm"):
                check_html(arg, arg.parent.resolve(), report)
            else:
                check_markdown(arg, report)
            files += 1
        else:
            report.broken.append(f"{arg}: (argument) -> no such file or folder")
    for line in report.broken:
        print(line)
    if report.broken:
        print(
            f"{len(report.broken)} broken link(s) of {report.checked} checked in {files} file(s)",
            file=sys.stderr,
        )
        return 1
    print(f"{report.checked} links checked in {files} files: all good")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
