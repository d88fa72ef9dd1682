"""Who gets a new ticket: round-robin is fair (across restarts and concurrent writers),
least-loaded picks the agent with the fewest open tickets, a rule can name the agent,
and every assignment says what decided it."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from servers import Database
from sqlalchemy import Engine
from sqlmodel import Session, col, select, update
from support import Box, cli, cli_json, make_mail, write_config

from inboxd.db import make_engine, session_scope
from inboxd.models import Team, Ticket, TicketEvent
from inboxd.tickets import intake
from inboxd.tickets.assignment import TeamSpec
from inboxd.tickets.routing import RoutingContext, compile_rules

OPS = ("olga@example.com", "omar@example.com", "otto@example.com")
BILLING = ("carl@example.com", "dina@example.com", "erin@example.com")
OPS_TEAM = (
    '[[team]]\nname = "ops"\nmembers = ["olga@example.com", "omar@example.com", '
    '"otto@example.com"]\nassignment = "round-robin"\n'
)


def intake_config(
    *, ops: str = "round-robin", billing: str = "least-loaded", rules: str = ""
) -> intake.IntakeConfig:
    """Mailbox "support" feeds team ops, mailbox "billing" team billing (three agents each)."""
    teams = {"ops": TeamSpec("ops", OPS, ops), "billing": TeamSpec("billing", BILLING, billing)}
    ruleset = None
    if rules:
        import tomllib

        ctx = RoutingContext(
            teams=frozenset(teams),
            agents=frozenset(OPS + BILLING),
            slas=frozenset(),
            team_members={name: frozenset(t.members) for name, t in teams.items()},
            mailboxes=frozenset({"support", "billing"}),
        )
        ruleset, errors = compile_rules(
            [("rules/test.toml", tomllib.loads(rules))], ctx, source=Path("rules")
        )
        assert errors == []
    return intake.IntakeConfig(
        secret=b"k" * 32,
        own_addresses=frozenset({"support@example.com", "billing@example.com"}),
        agents=frozenset(OPS + BILLING),
        default_teams={"support": "ops", "billing": "billing"},
        teams=teams,
        rules=ruleset,
    )


def new_ticket(
    engine: Engine, cfg: intake.IntakeConfig, n: int, *, mailbox: str = "support", **mail: Any
) -> int:
    """One customer mail, in its own transaction (as the daemon commits it); the ticket id."""
    mail.setdefault("subject", f"Question {n}")
    mail.setdefault("sender", f"customer{n}@client.example")
    with session_scope(engine) as s:
        r = intake.receive(s, cfg, mailbox=mailbox, data=make_mail(**mail))
    assert r.outcome == "new-ticket", r
    assert r.ticket_id is not None
    return r.ticket_id


def assignees(engine: Engine) -> list[str | None]:
    """Every ticket's assignee, in ticket order."""
    with Session(engine) as s:
        return list(s.exec(select(Ticket.assignee).order_by(col(Ticket.id))).all())


def events_of(engine: Engine, ticket_id: int, kind: str) -> list[dict[str, Any]]:
    with Session(engine) as s:
        rows = s.exec(
            select(TicketEvent)
            .where(TicketEvent.ticket_id == ticket_id, TicketEvent.kind == kind)
            .order_by(col(TicketEvent.id))
        ).all()
        return [dict(e.data, actor=e.actor) for e in rows]


def concurrent_writers(
    url: str, cfg: intake.IntakeConfig, per_writer: int, *, mailbox: str = "support"
) -> None:
    """Two writers (threads with their own connections) opening tickets at the same time,
    one transaction per mail, as two daemons do."""
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        engine = make_engine(url)
        try:
            start.wait()
            for n in range(per_writer):
                new_ticket(engine, cfg, w * 1000 + n, mailbox=mailbox)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures


def two_batches(
    url: str, cfg: intake.IntakeConfig, orders: tuple[tuple[str, str], tuple[str, str]]
) -> list[intake.Received]:
    """Two batches (one transaction each, as a daemon's fetched batch) of two mails, to the
    mailboxes in `orders`; both take their first turn before either goes on. Returns what
    became of the four mails."""
    both_took_a_turn = threading.Barrier(2, timeout=20)
    results: dict[int, list[intake.Received]] = {}
    failures: list[BaseException] = []

    def batch(w: int, order: tuple[str, str]) -> None:
        engine = make_engine(url)
        try:
            with session_scope(engine) as s:
                got = []
                for i, mailbox in enumerate(order):
                    mail = make_mail(subject=f"Batch {w} mail {i}", sender=f"b{w}{i}@c.example")
                    got.append(intake.receive(s, cfg, mailbox=mailbox, data=mail))
                    if i == 0:
                        both_took_a_turn.wait()
                results[w] = got
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=batch, args=(w, order)) for w, order in enumerate(orders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    return [r for w in (0, 1) for r in results[w]]


# ---------------------------------------------------------------------------- round-robin


def test_round_robin_gives_each_of_three_agents_a_third_of_300_tickets(engine: Engine) -> None:
    cfg = intake_config()
    for n in range(300):
        new_ticket(engine, cfg, n)
    got = assignees(engine)
    assert Counter(got) == dict.fromkeys(OPS, 100)
    assert got[:6] == [*OPS, *OPS]  # a strict rotation in arrival order
    assert all(got[i] == OPS[i % 3] for i in range(300))


def test_round_robin_continues_where_it_stopped_after_a_restart(
    database: Database, tmp_path: Path
) -> None:
    """Two `inboxd import` runs (two processes) of 150 mails each: 100 tickets per agent,
    and the second run's first ticket goes to the agent after the first run's last."""
    config = write_config(
        tmp_path / "cfg",
        database=database.url,
        boxes=[Box("support", "support@example.com", team="ops")],
        extra=OPS_TEAM,
    )
    for run in range(2):
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        for n in range(150):
            k = run * 150 + n
            (folder / f"{k:03}.eml").write_bytes(
                make_mail(subject=f"Order {k}", sender=f"c{k}@client.example")
            )
        out = cli(config, "import", str(folder), "--mailbox", "support").stdout.decode()
        assert "150 new tickets" in out
    tickets = sorted(cli_json(config, "ticket", "list", "--all"), key=lambda t: t["id"])
    assert len(tickets) == 300
    got = [t["assignee"] for t in tickets]
    assert Counter(got) == dict.fromkeys(OPS, 100)
    # 150 is a multiple of 3: the first run ended on the last agent, the second starts over.
    assert got[149] == OPS[2] and got[150] == OPS[0]
    assert all(got[i] == OPS[i % 3] for i in range(300))


def test_round_robin_survives_a_new_engine(database: Database) -> None:
    """The position lives in the database, not the process: a new engine picks it up."""
    cfg = intake_config()
    first = make_engine(database.url)
    for n in range(4):  # olga, omar, otto, olga
        new_ticket(first, cfg, n)
    first.dispose()
    second = make_engine(database.url)
    try:
        new_ticket(second, cfg, 4)
        assert assignees(second) == [OPS[0], OPS[1], OPS[2], OPS[0], OPS[1]]
        with Session(second) as s:
            assert s.get(Team, "ops").rr_last == OPS[1]  # type: ignore[union-attr]
    finally:
        second.dispose()


def test_round_robin_with_two_concurrent_writers_is_still_even(database: Database) -> None:
    """Two writers creating tickets at the same time: an even split, and the rotation ends
    where 120 turns end, so no turn was lost to a race (a lost update doubles one agent
    and shifts the rotation)."""
    per_writer = 60
    concurrent_writers(database.url, intake_config(), per_writer)
    got = assignees(database.engine)
    assert len(got) == 2 * per_writer
    assert Counter(got) == dict.fromkeys(OPS, 2 * per_writer // 3)
    with Session(database.engine) as s:
        assert s.get(Team, "ops").rr_last == OPS[(2 * per_writer - 1) % 3]  # type: ignore[union-attr]


def test_transactions_spanning_two_teams_do_not_deadlock(postgres_database: Database) -> None:
    """A batch (one transaction, many mails) takes turns in several teams. Two batches
    taking them in opposite order at the same time must both complete, every mail routed
    and assigned, none quarantined: the turn is not held until the batch commits."""
    cfg = intake_config(billing="round-robin")
    got = two_batches(postgres_database.url, cfg, (("support", "billing"), ("billing", "support")))
    assert [r.outcome for r in got] == ["new-ticket"] * 4
    owners = assignees(postgres_database.engine)
    assert Counter(a in OPS for a in owners) == {True: 2, False: 2}
    assert len(set(owners)) == 4  # each team's two turns went to two different agents


# ---------------------------------------------------------------------------- least-loaded


def test_least_loaded_picks_the_agent_with_fewest_open_tickets(engine: Engine) -> None:
    cfg = intake_config()
    first = [new_ticket(engine, cfg, n, mailbox="billing") for n in range(6)]
    # Ties go to the member listed first: 2 each, in member order.
    assert assignees(engine) == [*BILLING, *BILLING]
    # carl resolves both of his; erin puts one on hold (pending still counts as open).
    with session_scope(engine) as s:
        s.exec(
            update(Ticket)
            .where(col(Ticket.id).in_(first), col(Ticket.assignee) == BILLING[0])
            .values(status="resolved")
        )
        s.exec(
            update(Ticket).where(col(Ticket.id) == first[2]).values(status="pending")  # erin's
        )
    # open: carl 0, dina 2, erin 2 -> carl, carl, then carl (2) ties with dina: carl first.
    later = [new_ticket(engine, cfg, 10 + n, mailbox="billing") for n in range(3)]
    got = dict(zip(later, assignees(engine)[6:], strict=True))
    assert list(got.values()) == [BILLING[0], BILLING[0], BILLING[0]]
    # Now carl 3, dina 2, erin 2: dina, then erin, then all tie at 3: carl.
    more = [new_ticket(engine, cfg, 20 + n, mailbox="billing") for n in range(3)]
    assert assignees(engine)[9:] == [BILLING[1], BILLING[2], BILLING[0]]
    assert events_of(engine, more[0], "assigned") == [
        {
            "assignee": BILLING[1],
            "strategy": "least-loaded",
            "rule": None,
            "actor": "system",
        }
    ]


def test_least_loaded_counts_the_batch_own_new_tickets(engine: Engine) -> None:
    """One transaction (a fetched batch) opening three billing tickets: one each, as
    each pick sees the batch's earlier, uncommitted tickets."""
    cfg = intake_config()
    with session_scope(engine) as s:
        for n in range(3):
            mail = make_mail(subject=f"Refund {n}", sender=f"r{n}@client.example")
            assert intake.receive(s, cfg, mailbox="billing", data=mail).outcome == "new-ticket"
    assert assignees(engine) == list(BILLING)


def test_least_loaded_with_two_concurrent_writers_is_still_even(database: Database) -> None:
    """Two writers opening billing tickets at the same time: 40 each for the three agents."""
    per_writer = 60
    concurrent_writers(database.url, intake_config(), per_writer, mailbox="billing")
    assert Counter(assignees(database.engine)) == dict.fromkeys(BILLING, 2 * per_writer // 3)


def test_least_loaded_sees_the_picks_of_uncommitted_transactions(
    postgres_database: Database,
) -> None:
    """Two daemons' batches each open a billing ticket and, before either commits, an
    ops ticket (in opposite team order): four different agents, not the first of each
    team twice; both complete, nothing quarantined (no lock waits for a commit)."""
    cfg = intake_config(ops="least-loaded")
    got = two_batches(postgres_database.url, cfg, (("billing", "support"), ("support", "billing")))
    assert [r.outcome for r in got] == ["new-ticket"] * 4
    owners = assignees(postgres_database.engine)
    assert sorted(a for a in owners if a in BILLING) == sorted(BILLING[:2])
    assert sorted(a for a in owners if a in OPS) == sorted(OPS[:2])


def test_a_pick_rolled_back_is_forgotten(postgres_database: Database) -> None:
    """A batch that picks carl and then fails (rolled back) leaves no load behind: the
    next ticket goes to carl again."""
    cfg = intake_config()
    other = make_engine(postgres_database.url)

    def doomed_batch() -> None:
        with session_scope(other) as s:
            mail = make_mail(subject="Doomed", sender="d@client.example")
            intake.receive(s, cfg, mailbox="billing", data=mail)
            raise RuntimeError("the batch fails before its commit")

    try:
        with pytest.raises(RuntimeError, match="fails before its commit"):
            doomed_batch()
    finally:
        other.dispose()
    new_ticket(postgres_database.engine, cfg, 1, mailbox="billing")
    assert assignees(postgres_database.engine) == [BILLING[0]]


# ---------------------------------------------------------------------------- rules


RULES = """
[[rule]]
name = "vip-to-dina"
when.from_domain = "vip.example"
then.team = "billing"
then.assign = "dina@example.com"

[[rule]]
name = "ops-leftovers"
when.subject = "(?i)leftover"
then.assign = "none"

[[rule]]
name = "billing-rotation"
when.subject = "(?i)invoice"
then.team = "billing"
then.assign = "round-robin"
"""


def test_a_rule_assigns_the_agent_it_names_and_the_event_names_the_rule(engine: Engine) -> None:
    cfg = intake_config(rules=RULES)
    vip = new_ticket(engine, cfg, 1, sender="boss@vip.example")
    leftover = new_ticket(engine, cfg, 2, subject="Leftover stock")
    plain = new_ticket(engine, cfg, 3)
    with Session(engine) as s:
        assert s.get(Ticket, vip).assignee == "dina@example.com"  # type: ignore[union-attr]
        assert s.get(Ticket, leftover).assignee is None  # type: ignore[union-attr]
        assert s.get(Ticket, plain).assignee == OPS[0]  # type: ignore[union-attr]
    assert events_of(engine, vip, "assigned") == [
        {
            "assignee": "dina@example.com",
            "strategy": "dina@example.com",
            "rule": "vip-to-dina",
            "actor": "system",
        }
    ]
    assert events_of(engine, leftover, "assigned") == []
    assert events_of(engine, leftover, "routed")[0]["set_by"]["assign"] == "ops-leftovers"
    assert events_of(engine, plain, "assigned")[0]["rule"] is None  # the team's own strategy


def test_a_rule_strategy_overrides_the_teams(engine: Engine) -> None:
    """billing is least-loaded, but the invoice rule says round-robin: invoices rotate
    (carl gets a second one while dina and erin have one); other billing mail still goes
    to the least loaded."""
    cfg = intake_config(rules=RULES)
    tickets = [new_ticket(engine, cfg, n, subject=f"Invoice {n}") for n in range(4)]
    assert assignees(engine) == [*BILLING, BILLING[0]]
    for t in tickets:
        (event,) = events_of(engine, t, "assigned")
        assert event["strategy"] == "round-robin" and event["rule"] == "billing-rotation"
    # least-loaded (carl 2, dina 1, erin 1): dina.
    new_ticket(engine, cfg, 99, mailbox="billing")
    assert assignees(engine)[-1] == BILLING[1]


@pytest.mark.parametrize("members", [(), ("lea@example.com",)])
def test_a_named_agent_is_assigned_whatever_the_team_strategy(
    sqlite_engine: Engine, members: tuple[str, ...]
) -> None:
    """`then.assign = "<agent>"` is not a strategy: it works for a team with no members
    to rotate among, and for a team whose strategy is none."""
    cfg = intake_config(rules=RULES)
    cfg = intake.IntakeConfig(
        **{
            **cfg.__dict__,
            "teams": {**cfg.teams, "billing": TeamSpec("billing", members, "none")},
        }
    )
    t = new_ticket(sqlite_engine, cfg, 1, sender="ceo@vip.example")
    with Session(sqlite_engine) as s:
        assert s.get(Ticket, t).assignee == "dina@example.com"  # type: ignore[union-attr]
