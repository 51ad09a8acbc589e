"""Statements from outside (``spendstream sql``, the loopback endpoints): what may run, and how.

ClickHouse enforces read-only access, not a parser of ours. A read runs with the
``readonly=1`` setting (embedded: in a chdb session opened read-only; server: as a
query setting), and ClickHouse then refuses writes, DDL, settings changes and every
table function it does not mark safe for read-only users (``file``, ``url``, ``s3``,
``remote``, ``mysql``, ``postgresql``, ``executable``, ``python`` …; see
``system.table_functions.allow_readonly``).

In chdb, two things are settled before anything runs, because chdb runs every
``;``-separated statement of one call (so a check that runs the text is no check):

- **one statement**: chdb's own classifier counts statements with ClickHouse's
  parser without executing them; a trailing ``;`` is fine, a second statement is
  refused, with or without ``--write``;
- **no control statement on the read path**: ``INTO OUTFILE`` is written by chdb's
  client side, which ``readonly`` does not govern; the classifier names it (with
  ``SET``, ``SYSTEM`` and statement settings such as ``mutations_sync``) ``CONTROL``.

One hole is left that the engine does not close in chdb, so it is closed here by
name: in clickhouse-local mode the scalar function ``file(path)`` reads any file even
under ``readonly``. A read whose syntax tree (``EXPLAIN AST``, which evaluates
nothing) calls ``file`` is refused.

A server needs none of this: its HTTP interface refuses multi-statements and
``INTO OUTFILE`` itself, and confines ``file()`` to ``user_files_path``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from spendstream.sinks.store import StoreError

# Run a statement in the statement's own session and return its output; raises StoreError.
Runner = Callable[[str, str, "dict[str, Any] | None"], bytes]
# chdb's classification of a text: (query class, number of statements), never executing it.
Classifier = Callable[[str], "tuple[str, int]"]

_CALLS_FILE = re.compile(r"^\s*Function file(?:\s|$)", re.MULTILINE)


class StatementRefused(StoreError):
    """Refused before anything ran: not exactly one statement."""


class WriteRefused(StoreError):
    """Something that would change data or reach outside, sent down the read-only path."""


def check_statement(sql: str, params: dict[str, Any] | None, *, write: bool, classify: Classifier,
                    run: Runner) -> None:
    """Raise unless ``sql`` is one statement that may run (reads only, unless ``write``).

    Nothing in ``sql`` is executed here: classification parses, ``formatQuery`` takes
    the text as a string value, and ``EXPLAIN AST`` of one statement builds its tree.
    """
    query_class, count = classify(sql)
    if query_class == "UNKNOWN":  # it does not parse: let ClickHouse's parser say where
        run("SELECT formatQuery({text:String})", "TSVRaw", {"text": _escaped(sql)})
        raise StatementRefused("ClickHouse could not parse this statement; nothing was run")
    if count != 1:
        raise StatementRefused(f"one statement at a time: ClickHouse's parser found {count} in this text; "
                               "nothing was run")
    if write:
        return
    if query_class == "CONTROL":
        raise WriteRefused("read-only: INTO OUTFILE writes a file on this machine, and SET, SYSTEM and settings "
                           "that change how writes complete are not reads; pass --write to run it")
    if _CALLS_FILE.search(run("EXPLAIN AST " + sql, "TSVRaw", params).decode()):
        raise WriteRefused("read-only: file() reads files on this machine (chdb allows it even in readonly "
                           "mode); pass --write to run it")


def as_write_refused(exc: Exception) -> WriteRefused | None:
    """ClickHouse's refusal of a read-only statement (error READONLY) as WriteRefused; None for other errors."""
    if "(READONLY)" not in str(exc):
        return None
    return WriteRefused(f"read-only: ClickHouse refused this statement ({str(exc).strip()}); pass --write to run it")


def _escaped(text: str) -> str:
    """A query parameter value as ClickHouse reads it (escaped like TSV: backslash, tab, newline)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
