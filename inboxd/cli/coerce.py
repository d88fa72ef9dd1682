"""Command-line values converted without pydantic, for the values agents type every day.

Typer 0.29 converts every parameter through a pydantic `TypeAdapter` (`typer/_adapters.py`),
built on first use even when the value is None: importing that module and building the
adapters costs more than a whole `ticket list` query. `install` gives each parameter a
converter that handles the plain cases itself (no value, a string, a decimal number, a
list of strings, a path printed as given) with the result Typer's adapter gives, and
hands anything else to Typer's own converter, built only then, so unusual input keeps
Typer's behaviour and error messages exactly. tests/test_agent_cli.py holds the two
equal on sample values.

It relies on Typer's private `_runtime_param` slot (typer 0.26 to 0.29); a Typer without
it keeps its own conversion, only slower.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

_DIGITS = re.compile(r"[0-9]{1,18}")  # what both int() and pydantic read the same way
_UNSET = object()


class LightParam:
    """A stand-in for Typer's `RuntimeParam`: the common cases here, the rest via Typer."""

    def __init__(self, param: Any) -> None:
        self.descriptor = param.type_descriptor
        self._typer: Any = None

    def typer_param(self) -> Any:
        """Typer's own converter (and its pydantic adapter), built on first need."""
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(self.descriptor)
        return self._typer

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:  # as RuntimeParam.coerce, before any adapter
            return () if multi else None
        done = _UNSET
        if multi and isinstance(value, list | tuple):
            item_type = _item_type(self.descriptor.annotation)
            items = [self._plain(item, item_type, param, ctx) for item in value]
            if item_type is not None and all(i is not _UNSET for i in items):
                done = items  # Typer's list adapter returns a list
        elif not multi:
            done = self._plain(value, self.descriptor.annotation, param, ctx)
        if done is not _UNSET:
            return done
        return self.typer_param().coerce(value, param=param, ctx=ctx)

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        return self.typer_param()._coerce_value(value, param=param, ctx=ctx)

    def _plain(self, value: Any, annotation: Any, param: Any, ctx: Any) -> Any:
        """The converted value, or _UNSET when Typer must decide."""
        info = self.descriptor.parameter_info
        if info.parser is not None:
            return _UNSET
        if annotation is str and type(value) is str:
            return value  # Typer's str adapter returns a str argument unchanged
        if annotation is int and info.min is None and info.max is None:
            if type(value) is int:  # a default
                return value
            if type(value) is str and _DIGITS.fullmatch(value):
                return int(value)
            return _UNSET
        if annotation is Path and type(value) is str:
            return self._path(value, param, ctx)
        return _UNSET

    def _path(self, value: str, param: Any, ctx: Any) -> Any:
        info = self.descriptor.parameter_info
        if info.path_type not in (None, Path) or not value or "\0" in value:
            return _UNSET
        path = Path(value)
        if os.fspath(path) != value:  # Typer's messages quote the text as typed
            return _UNSET
        from typer._param_types import coerce_cli_path

        # Given a Path, Typer's converter does what it does after turning the text into one.
        return coerce_cli_path(path, info, path_type=Path, param=param, ctx=ctx)


def _item_type(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if getattr(annotation, "__origin__", None) is list and args and len(args) == 1:
        return args[0]
    return None


def install() -> None:
    """Make every Typer parameter convert through a `LightParam` (idempotent).

    Per class, not per command: Typer creates some parameters (`--help`, the completion
    options) while parsing, after any command object could be visited.
    """
    from typer.core import _TyperParameter

    if getattr(_TyperParameter, "_inboxd_light", False) or not hasattr(
        _TyperParameter, "get_runtime_param"
    ):
        return

    def get_runtime_param(self: Any) -> Any:
        if getattr(self, "_runtime_param", None) is None:
            self._runtime_param = (
                LightParam(self)
                if self.type_descriptor.file_annotation is None
                else _typer_runtime_param(self)
            )
        return self._runtime_param

    def _typer_runtime_param(self: Any) -> Any:
        from typer._coercion import build_runtime_param

        return build_runtime_param(self.type_descriptor)

    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
    _TyperParameter._inboxd_light = True  # type: ignore[attr-defined]
