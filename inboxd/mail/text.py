"""Mail bodies as plain text: HTML converted for reading, quoted history collapsed.

Pure functions over `str`, stdlib only (`html.parser`). The converter aims at what
an agent reads in a terminal, not at a faithful rendering: paragraphs and line
breaks survive, list items get a marker, links show as ``text (url)``,
blockquotes are prefixed with ``> `` (so `reply_text` can collapse them), and
script, style and head content never appears.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text", "normalize_newlines", "reply_text"]

_SKIP = frozenset({"script", "style", "template", "noscript", "title", "xml", "svg", "object"})
# Elements whose start and end break the line; PARAGRAPH ones leave a blank line.
_PARAGRAPH = frozenset(
    {
        "p",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "dl",
        "table",
        "pre",
        "blockquote",
        "address",
        "figure",
        "fieldset",
        "form",
        "center",
    }
)
_LINE = frozenset(
    {
        "div",
        "tr",
        "li",
        "dt",
        "dd",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "caption",
        "thead",
        "tbody",
        "tfoot",
        "figcaption",
        "details",
        "summary",
        "option",
        "legend",
    }
)
_CELL = frozenset({"td", "th"})
_VOID_BREAK = frozenset({"br"})
_WS = re.compile(r"[ \t\n\r\f\v\xa0\u200b\u2028\u2029]+")
_LINK_SCHEMES = ("http://", "https://", "ftp://", "mailto:")


class _Converter(HTMLParser):
    """Streams HTML events into lines of text; see `html_to_text`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []  # pieces of the current line
        self._blank_wanted = 0  # 0: none, 1: new line, 2: new line plus a blank line
        self._skip = 0  # depth inside script/style/...
        self._in_head = False
        self._pre = 0
        self._quote = 0
        self._lists: list[list[int]] = []  # per open list: [ordered flag, counter]
        self._links: list[tuple[str, list[str]]] = []  # open <a>: href, text written inside
        self._blank_quote = 0  # quote depth of a pending blank line

    # -- output -------------------------------------------------------------
    def _prefix(self) -> str:
        indent = "  " * max(len(self._lists) - 1, 0)
        return "> " * self._quote + indent

    def _break(self, kind: int) -> None:
        """Ask for a line break (1) or a paragraph break (2) before the next text."""
        self._blank_quote = (
            self._quote if not self._blank_wanted else min(self._blank_quote, self._quote)
        )
        self._blank_wanted = max(self._blank_wanted, kind)

    def _flush_line(self) -> None:
        self.lines.append("".join(self._line).rstrip())
        self._line = []

    def _write(self, text: str) -> None:
        if not text:
            return
        if self._blank_wanted and (self._line or self.lines):
            if self._line:
                self._flush_line()
            if self._blank_wanted == 2 and self.lines and self.lines[-1].strip(" >"):
                self.lines.append(("> " * min(self._blank_quote, self._quote)).rstrip())
            self._blank_wanted = 0
        elif self._blank_wanted:
            self._blank_wanted = 0
        if not self._line:
            text = text.lstrip(" ") if not self._pre else text
            if not text:
                return
            self._line.append(self._prefix())
        self._line.append(text)
        for _href, captured in self._links:
            captured.append(text)

    def _write_pre(self, text: str) -> None:
        first, *rest = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._write(first)
        for piece in rest:
            if not self._line:
                self._line.append(self._prefix())
            self._flush_line()
            self._write(piece)

    # -- parser events --------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
            return
        if tag == "head":
            self._in_head = True
            return
        if tag == "body":
            self._in_head = False
            return
        if self._skip or self._in_head:
            return
        if tag in _VOID_BREAK:
            if self._line:
                self._flush_line()
            elif not self._blank_wanted:
                self.lines.append(self._prefix().rstrip())
            return
        if tag == "hr":
            self._break(1)
            self._write("----")
            self._break(1)
            return
        if tag == "blockquote":
            self._break(2)
            self._quote += 1
            return
        if tag in ("ul", "ol"):
            self._break(2 if not self._lists else 1)
            self._lists.append([tag == "ol", 0])
            return
        if tag == "li":
            self._break(1)
            if self._lists:
                marker = self._lists[-1]
                marker[1] += 1
                self._write(f"{marker[1]}. " if marker[0] else "- ")
            else:
                self._write("- ")
            return
        if tag == "pre":
            self._break(2)
            self._pre += 1
            return
        if tag in _PARAGRAPH:
            self._break(2)
            return
        if tag in _LINE:
            self._break(1)
            return
        if tag in _CELL:
            if self._line:
                self._line.append(" ")
            return
        if tag == "a":
            href = (dict(attrs).get("href") or "").strip()
            self._links.append((href, []))
            return
        if tag == "img" and self._links:  # a linked image: its alt text names the link
            alt = _WS.sub(" ", dict(attrs).get("alt") or "").strip()
            if alt:
                self._write(alt)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "hr", "img"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(self._skip - 1, 0)
            return
        if tag == "head":
            self._in_head = False
            return
        if self._skip or self._in_head:
            return
        if tag == "blockquote":
            self._break(2)
            self._quote = max(self._quote - 1, 0)
            return
        if tag in ("ul", "ol"):
            if self._lists:
                self._lists.pop()
            self._break(2 if not self._lists else 1)
            return
        if tag == "pre":
            self._pre = max(self._pre - 1, 0)
            self._break(2)
            return
        if tag in _PARAGRAPH:
            self._break(2)
            return
        if tag in _LINE:
            self._break(1)
            return
        if tag == "a" and self._links:
            self._close_link(*self._links.pop())

    def _close_link(self, href: str, captured: list[str]) -> None:
        if not href.lower().startswith(_LINK_SCHEMES):
            return  # anchors, javascript:, cid: images: nothing a reader can follow
        shown = "".join(captured).strip().rstrip("/").lower()
        target = href[7:] if href.lower().startswith("mailto:") else href
        if shown in (target.rstrip("/").lower(), href.rstrip("/").lower()):
            return
        if shown:
            self._write(f" ({target})")
        else:
            gap = " " if self._line and not self._line[-1].endswith(" ") else ""
            self._write(gap + target)

    def handle_data(self, data: str) -> None:
        if self._skip or self._in_head:
            return
        if self._pre:
            self._write_pre(data.replace("\xa0", " "))
            return
        text = _WS.sub(" ", data)
        if text == " " and not self._line:
            return
        self._write(text)

    def finish(self) -> str:
        self.close()
        if self._line:
            self._flush_line()
        out: list[str] = []
        for line in self.lines:
            if not line.strip(" >") and out and not out[-1].strip(" >"):
                continue  # at most one blank line in a row
            out.append(line)
        return "\n".join(out).strip("\n")


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body (never raises on malformed HTML)."""
    converter = _Converter()
    try:
        converter.feed(html)
        return converter.finish()
    except (AssertionError, ValueError, IndexError):  # html.parser on pathological markup
        return _WS.sub(" ", re.sub(r"<[^>]*>", " ", html)).strip()


def normalize_newlines(text: str) -> str:
    """CRLF and lone CR become LF, so text from any mailer splits the same way."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


# -- quoted history ------------------------------------------------------------

_ORIGINAL_MESSAGE = re.compile(
    r"^\s*[-_=*]{2,}\s*(original message|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|messaggio originale|oorspronkelijk bericht|originalmeddelande|"
    r"opprinnelig melding|oprindelig meddelelse|исходное сообщение|原始邮件)\s*[-_=*]{2,}\s*$",
    re.IGNORECASE,
)
_UNDERSCORE_RULE = re.compile(r"^\s*_{20,}\s*$")
_HEADER_FROM = re.compile(r"^\s*\*?(from|von|de|van|da|från|fra|от)\s*:\*?\s*\S", re.IGNORECASE)
_HEADER_SENT = re.compile(
    r"^\s*\*?(sent|date|gesendet|datum|envoyé|date d'envoi|enviado|fecha|inviato|data|"
    r"verzonden|skickat|sendt|отправлено|дата)\s*:\*?\s*\S",
    re.IGNORECASE,
)
_ATTRIBUTION = re.compile(
    r"(wrote|writes|schrieb|a écrit|escribió|ha scritto|scrisse|schreef|escreveu|skrev|"
    r"kirjoitti|napisał|написал|написала|napsal)\s*:\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(r"^\s*(on|am|le|el|il|op|em|på|den|w dniu|\d)", re.IGNORECASE)


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _attribution_start(lines: list[str], end: int) -> int | None:
    """Index where an attribution ("On <date>, <who> wrote:") ending before `end` starts."""
    i = end - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i < 0:
        return None
    if _ATTRIBUTION.search(lines[i]):
        # Clients wrap a long attribution over two or three lines.
        for start in range(i, max(i - 3, -1), -1):
            if not lines[start].strip():
                break
            if _ATTRIBUTION_START.match(lines[start]):
                return start
        return i
    return None


def reply_text(text: str) -> str:
    """What the sender wrote, without the history they quoted.

    Removes ``>``-quoted blocks with the attribution line before them, and
    everything from an Outlook-style history marker on ("-----Original
    Message-----", a ``From:``/``Sent:`` header block, the long underscore
    rule). Forwarded messages are kept: their content is what the sender sends.
    Returns the text unchanged when collapsing would leave nothing.
    """
    lines = normalize_newlines(text).split("\n")
    cut = len(lines)
    for i, line in enumerate(lines):
        if _ORIGINAL_MESSAGE.match(line):
            cut = i
            break
        if _HEADER_FROM.match(line) and any(
            _HEADER_SENT.match(nxt) for nxt in lines[i + 1 : i + 4]
        ):
            cut = i
            if i > 0 and _UNDERSCORE_RULE.match(lines[i - 1]):
                cut = i - 1
            break
    lines = lines[:cut]

    keep = [True] * len(lines)
    i = 0
    while i < len(lines):
        if not _is_quoted(lines[i]):
            i += 1
            continue
        start = i
        while i < len(lines) and (_is_quoted(lines[i]) or not lines[i].strip()):
            i += 1
        for j in range(start, i):
            keep[j] = False
        attribution = _attribution_start(lines, start)
        if attribution is not None:
            for j in range(attribution, start):
                keep[j] = False
    # An attribution with nothing quoted after it ends the reply too.
    kept = [line for line, k in zip(lines, keep, strict=True) if k]
    tail = _attribution_start(kept, len(kept))
    if tail is not None:
        kept = kept[:tail]
    while kept and not kept[-1].strip():
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return "\n".join(kept) if kept else text
