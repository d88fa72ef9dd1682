"""Templates for the mail inboxd writes: Jinja2, sandboxed, strict, plain text.

A name is looked up in the admin's folder (`[inboxd].templates`) first, then among the
defaults shipped in `inboxd/templates/`. The environment is sandboxed, so a template in a
shared config folder cannot reach Python internals, and strict (`StrictUndefined`), so a
misspelt variable is an error the admin sees (`check`), never a silently empty promise
to a customer. Text from customers goes in through `plain()` first: one line, no control
characters, bounded; there is no autoescaping because the output is text/plain.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from inboxd.errors import InboxdError

if TYPE_CHECKING:
    from inboxd.config import Settings

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_SPACE = re.compile(r"\s+")


class TemplateProblem(InboxdError):
    """A template is missing, does not parse, or uses a variable that does not exist."""


def plain(value: object, *, limit: int = 200) -> str:
    """Customer text made safe to put in a line of our mail.

    Whitespace runs (CR and LF included) become one space; control and format characters
    (bidi overrides, zero-width joiners, NUL) are dropped, so a value can neither start a
    line of its own nor visually reorder the text around it.
    """
    text = "" if value is None else str(value)
    if not text.isprintable():  # fast path: printable text has no controls and no CR/LF
        text = "".join(c for c in text if c.isspace() or unicodedata.category(c)[0] != "C")
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@lru_cache(maxsize=16)
def environment(folder: Path | None) -> SandboxedEnvironment:
    """The environment for an admin folder (or none): one per folder, cached."""
    loaders = [FileSystemLoader(str(folder))] if folder is not None else []
    loaders.append(FileSystemLoader(str(PACKAGE_TEMPLATES)))
    return SandboxedEnvironment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, context: Mapping[str, Any], *, folder: Path | None) -> str:
    """Render template `name`; raises TemplateProblem naming the template and the line."""
    try:
        return _template(name, folder).render(dict(context))
    except TemplateError as exc:
        raise TemplateProblem(_describe(name, exc)) from exc


RECHECK_S = 1.0  # an edited template is used from the next render a second later
_checked: dict[tuple[Path | None, str], tuple[float, Template]] = {}


def _template(name: str, folder: Path | None) -> Template:
    """The compiled template, its file looked at once a second, not at every render
    (Jinja's own check stats the file: every new ticket renders an acknowledgement)."""
    key, now = (folder, name), time.monotonic()
    hit = _checked.get(key)
    if hit is not None and now - hit[0] < RECHECK_S:
        return hit[1]
    template = environment(folder).get_template(name)
    _checked[key] = (now, template)
    return template


def _describe(name: str, exc: TemplateError) -> str:
    line = getattr(exc, "lineno", None) or _template_line(name, exc)
    where = f"template {name}" + (f", line {line}" if line else "")
    kind = type(exc).__name__
    if kind == "TemplateNotFound":
        return f"{where}: not found (in [inboxd].templates or the built-in templates)"
    return f"{where}: {exc.message or kind}"


def _template_line(name: str, exc: BaseException) -> int | None:
    """The template line a render error came from: Jinja maps its frames back to them."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if filename == name or filename.endswith("/" + name):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def check(settings: Settings) -> list[str]:
    """Render every template the configuration names with sample values; the problems.

    For `inboxd check`: a template that fails here would fail on a real ticket.
    """
    from inboxd.config import NotifyKind
    from inboxd.tickets import ack, notify, sla, survey

    folder = settings.inboxd.templates
    names = {settings.ack.template} | {m.ack_template for m in settings.mailboxes if m.ack_template}
    jobs = [(n, ack.sample_context(with_sla=w)) for n in sorted(names) for w in (True, False)]
    jobs.append((sla.ESCALATION_TEMPLATE, sla.sample_context()))
    jobs += [(f"notify-{w}.txt", notify.sample_context(w)) for w in get_args(NotifyKind)]
    jobs.append((settings.survey.template, survey.sample_context()))
    problems: list[str] = []
    for name, context in jobs:
        try:
            render(name, context, folder=folder)
        except TemplateProblem as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    return problems
