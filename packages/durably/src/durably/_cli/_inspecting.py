"""``durably ls`` and ``durably show``: the executions of a store, one execution's checkpoint.

Plain text when piped (or with ``NO_COLOR``), ``rich`` tables and colours on a terminal,
one JSON document with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from durably._cli._common import cli_config, printable
from durably.errors import CorruptObjectError, NotFoundError, UnsupportedFormatError

if TYPE_CHECKING:
    from durably.storage import CheckpointProvider

__all__ = ["ls_command", "show_command"]


async def ls_command(args: argparse.Namespace) -> int:
    """``durably ls``: every execution with its status (and why a failed one failed)."""
    from durably import open_store
    from durably._inspect import list_executions

    async with open_store(config=cli_config(args)) as provider:
        rows = await list_executions(provider)
        for row in rows:
            if row["status"] == "failed":
                row["reason"] = await _failure_reason(provider, row["execution_id"])
            elif row["status"] not in ("completed", "empty"):
                await _check_damage(provider, row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no executions")
        return 0
    from durably._console import fancy

    if fancy(sys.stdout):
        _ls_fancy(rows)
        return 0
    print(
        f"{'EXECUTION':<20} {'STATUS':<17} {'AGENTS':>6} {'CHECKPOINTS':>11} {'BYTES':>10}"
        "  LAST ACTIVITY"
    )
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["updated_at"] or 0))
        reason = f"  {row['reason']}" if row.get("reason") else ""
        print(
            printable(
                f"{row['execution_id']:<20} {row['status']:<17} {row['agents']:>6} "
                f"{row['checkpoints']:>11} {row['bytes']:>10,}  {when}{reason}"
            )
        )
    return 0


def _ls_fancy(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    from durably._console import STATUS_STYLE, iso, make_console, relative

    table = Table()
    for name, justify in (
        ("EXECUTION", "left"),
        ("STATUS", "left"),
        ("AGENTS", "right"),
        ("CHECKPOINTS", "right"),
        ("BYTES", "right"),
        ("LAST ACTIVITY", "left"),
        ("AGO", "right"),
        ("REASON", "left"),
    ):
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            overflow="fold" if name == "REASON" else "ellipsis",
        )
    now = time.time()
    for row in rows:
        table.add_row(
            printable(row["execution_id"]),
            Text(row["status"], style=STATUS_STYLE.get(row["status"], "")),
            str(row["agents"]),
            str(row["checkpoints"]),
            f"{row['bytes']:,}",
            iso(row["updated_at"]),
            relative(row["updated_at"], now),
            Text(printable(row.get("reason") or ""), style="dim"),
        )
    make_console(sys.stdout).print(table)


async def _check_damage(provider: CheckpointProvider, row: dict[str, Any]) -> None:
    """Show an unfinished execution whose latest checkpoint cannot be read as
    ``damaged``, with the error as its reason (a worker skips it; nothing is written to
    it, so that restoring the damaged object from a backup repairs it)."""
    try:
        await provider.load_latest_checkpoint(row["execution_id"])
    except (CorruptObjectError, UnsupportedFormatError) as exc:
        row["status"] = "damaged"
        row["reason"] = " ".join(str(exc).split())


async def _failure_reason(provider: Any, execution_id: str) -> str | None:
    """Why a failed execution failed: the reason a worker recorded, else the error the
    program ended with (from the final record's document, decoded inertly)."""
    from durably.checkpoint import META_REASON, CheckpointManager
    from durably.errors import DurablyError as _Error

    try:
        latest = await provider.load_latest_checkpoint(execution_id)
        if latest is None:
            return None
        reason = latest.metadata.get(META_REASON)
        if reason:
            return str(reason)
        manager = CheckpointManager(execution_id, provider)
        doc = (await manager.decode(latest, unresolved=[])).get("doc", {})
    except _Error as exc:
        return f"(cannot be read: {exc})"
    result = doc.get("result") if isinstance(doc, dict) and doc.get("type") == "final" else None
    if result is None:
        return None
    text = " ".join(str(result).split())
    return text if len(text) <= 200 else text[:197] + "..."


async def show_command(args: argparse.Namespace) -> int:
    """``durably show``: an execution's latest checkpoint (or ``--at``'s), decoded inertly."""
    from durably import open_store
    from durably._inspect import describe_execution, render_show
    from durably.checkpoint import CheckpointManager

    config = cli_config(args)
    async with open_store(config=config) as provider:
        data = await describe_execution(
            CheckpointManager(args.execution_id, provider, config=config), at=args.at
        )
    if data is None:
        raise NotFoundError(f"no execution {args.execution_id!r}")
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    from durably._console import fancy

    if fancy(sys.stdout):
        _show_fancy(data)
    else:
        print(render_show(data))
    return 0


def _show_fancy(data: dict[str, Any]) -> None:
    """``show`` on a terminal: the plain text, coloured, then the transcript as a chat."""
    from rich.text import Text

    from durably._console import STATUS_STYLE, agent_style, iso, make_console, relative
    from durably._inspect import render_show

    console = make_console(sys.stdout)
    lines = render_show(data).splitlines()
    head = Text()
    head.append(f"execution {data['execution_id']}", style="bold")
    head.append(": ")
    head.append(data["status"], style=f"bold {STATUS_STYLE.get(data['status'], '')}")
    head.append(
        f"   last activity {iso(data.get('updated_at'))} ({relative(data.get('updated_at'))})",
        style="dim",
    )
    console.print(head)
    section = ""
    for line in lines[1:]:
        if not line.startswith(" "):
            section = line.split(":")[0]
        style = ""
        if line.startswith(("error:", "tool error:")):
            style = "red"
        elif line.startswith("result:"):
            style = "green"
        elif line.startswith("agent "):
            style = f"bold {agent_style(line.split()[1])}"
        elif section == "transcript" and line.startswith("    "):
            agent, _, _ = line.strip().partition(": ")
            text = Text(line)
            text.stylize(f"bold {agent_style(agent)}", 4, 4 + len(agent))
            console.print(text)
            continue
        elif section == "user input" and line.startswith("    "):
            style = "green"
        elif not line.startswith(" "):
            style = "bold"
        console.print(Text(line, style=style))
