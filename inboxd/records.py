"""ORM instances at Core prices, for the intake path.

`Session.get` of a ticket costs about 250 µs, `Ticket(**values)` 170 µs and the flush of
a two-column change 200 µs: together more than the SQL they stand for, on every mail.
These helpers give the same session-tracked instances for a fraction of that: rows are
read and written with `db.Prepared`, instances are built the way a query loads them
(no `__init__`), and the session's identity map and attribute history stay true, so ORM
code further on (`sla`, `merge`) sees the usual objects and flushes the usual way.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import bindparam, inspect, select, update
from sqlalchemy.orm import configure_mappers, make_transient_to_detached

from inboxd.db import Prepared

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlmodel import Session, SQLModel

T = TypeVar("T", bound="SQLModel")


def build(model: type[T], values: dict[str, Any]) -> T:
    """A transient instance holding `values`, built as a query builds one (no `__init__`)."""
    mapper = inspect(model)
    if not mapper.configured:  # a query would have configured it: instrumentation is set up then
        configure_mappers()
    obj: T = mapper.class_manager.new_instance()
    obj.__dict__.update(values)
    return obj


def attach(session: Session, obj: SQLModel) -> None:
    """Make `obj`, whose row exists with its current values, a clean persistent instance."""
    make_transient_to_detached(obj)
    session.add(obj)


def held(session: Session, model: type[T], pk: object) -> T | None:
    """The instance of that row the session's identity map holds, if any."""
    key = inspect(model).identity_key_from_primary_key([pk])
    return session.identity_map.get(key)  # type: ignore[return-value]


def get(session: Session, model: type[T], pk: object) -> T | None:
    """`session.get(model, pk)`: the identity map's instance, else the row, loaded."""
    found = held(session, model, pk)
    if found is not None:
        return found
    names, processors = _loading(model, session.get_bind().dialect)
    rows = _select_by_id(model).rows(session, {"pk": pk})
    if not rows:
        return None
    values = {
        name: (proc(value) if proc is not None and value is not None else value)
        for name, proc, value in zip(names, processors, rows[0], strict=True)
    }
    obj = build(model, values)
    attach(session, obj)
    return obj


def write_back(session: Session, obj: SQLModel) -> None:
    """UPDATE the columns of `obj` changed since it was loaded, and mark them clean.

    One prepared statement instead of a unit-of-work flush; the instance then holds what
    the row holds, with no pending change.
    """
    state = inspect(obj)
    if not state.modified or state.key is None:
        return
    values = state.dict
    unchanged = state.unmodified
    changed = tuple(sorted(p.key for p in state.mapper.column_attrs if p.key not in unchanged))
    if changed:
        update_by_id(type(obj), changed).rows(
            session, {"_id": state.key[1][0], **{k: values.get(k) for k in changed}}
        )
    # What a flush does to a written instance, so the session no longer counts it dirty:
    # an unchanged but "modified" instance still costs a unit of work at the next flush.
    state._commit_all(values, session.identity_map)


@cache
def _select_by_id(model: type[SQLModel]) -> Prepared:
    table = model.__table__  # type: ignore[attr-defined]
    (pk,) = table.primary_key.columns
    return Prepared(select(*table.columns).where(pk == bindparam("pk")))


_Loading = tuple[tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]
_LOADING: dict[tuple[type[Any], str, str], _Loading] = {}


def _loading(model: type[SQLModel], dialect: Dialect) -> _Loading:
    """Attribute names and the dialect's result processors of `model`'s columns, in order."""
    key = (model, dialect.name, dialect.driver)
    found = _LOADING.get(key)
    if found is None:
        columns = list(model.__table__.columns)  # type: ignore[attr-defined]
        found = _LOADING[key] = (
            tuple(c.key for c in columns),
            tuple(c.type._cached_result_processor(dialect, None) for c in columns),
        )
    return found


@cache
def update_by_id(model: type[SQLModel], names: tuple[str, ...]) -> Prepared:
    """`UPDATE <table> SET <names> WHERE id = :_id`, built once per set of names."""
    table = model.__table__  # type: ignore[attr-defined]
    (pk,) = table.primary_key.columns
    return Prepared(
        update(table).where(pk == bindparam("_id")).values({n: bindparam(n) for n in names})
    )
