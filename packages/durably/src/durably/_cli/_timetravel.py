"""``durably history``, ``diff`` and ``fork``: an execution's checkpoints, compared and copied.

The data come from :mod:`durably.timetravel`; this module only prints them (coloured on
a terminal, plain when piped, JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from durably._cli._common import UsageError, cli_config, dumps, printable

__all__ = ["diff_command", "fork_command", "history_command"]


async def fork_command(args: argparse.Namespace) -> int:
    """``durably fork``: copy an execution up to a checkpoint; print the new id."""
    from durably.timetravel import fork

    new_id = await fork(
        args.execution_id,
        at=args.at,
        at_llm_call=args.at_llm_call,
        new_id=args.new_id,
        config=cli_config(args),
    )
    print(new_id)
    print(f"resume it with: durably resume {new_id} [--llm SPEC]", file=sys.stderr)
    return 0


async def diff_command(args: argparse.Namespace) -> int:
    """``durably diff``: compare two points, or list what was journaled between two."""
    points = args.points
    if len(points) == 3 and points[1].isdigit() and points[2].isdigit():
        return await _diff_one(args, points[0], int(points[1]), int(points[2]))
    if len(points) != 2:
        raise UsageError(
            "diff takes EXECUTION[@CHECKPOINT] EXECUTION[@CHECKPOINT], or "
            "EXECUTION K1 K2 (two checkpoints of one execution)"
        )
    from durably.timetravel import compare, parse_point

    for point in points:
        try:
            parse_point(point)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    data = await compare(points[0], points[1], config=cli_config(args))
    if args.json:
        print(dumps(data, indent=2))
        return 0
    out = _Out()
    names = []
    for side in ("a", "b"):
        where = data[side]
        origin = f", forked from {where['forked_from']}" if where.get("forked_from") else ""
        names.append(f"{where['execution_id']}@{where['checkpoint']} ({where['status']}{origin})")
    out.line(f"--- {names[0]}", "bold red")
    out.line(f"+++ {names[1]}", "bold green")
    same = True
    for name, agent in data["agents"].items():
        old, new = agent["call_stack"]
        if old != new:
            same = False
            out.line(f"  {name} call stack: {old} -> {new}", "yellow")
        for part in ("state", "locals"):
            prefix = "state." if part == "state" else ""
            for key, value in agent[part]["added"].items():
                same = False
                out.line(f"+ {name} {prefix}{key} = {dumps(value, 120)}", "green")
            for key in agent[part]["removed"]:
                same = False
                out.line(f"- {name} {prefix}{key}", "red")
            for key, (before, after) in agent[part]["changed"].items():
                same = False
                out.line(
                    f"~ {name} {prefix}{key}: {dumps(before, 60)} -> {dumps(after, 60)}", "yellow"
                )
    said = data["transcript"]
    out.line(f"transcript: {said['common']} line(s) in common", "bold")
    for side, mark, style in (("a", "-", "red"), ("b", "+", "green")):
        for line in said[side]:
            same = False
            out.line(f"{mark} {line['agent']}: {line['text']}", style)
    inputs = data["inputs"]
    for side, mark, style in (("a", "-", "red"), ("b", "+", "green")):
        for text in inputs[side]:
            same = False
            out.line(f"{mark} you: {text}", style)
    calls = data["llm_calls"]
    other = calls["same_prompt_other_response"]
    differs = f"; {other} with the same prompt answered differently" if other else ""
    out.line(f"LLM calls: {calls['common']} in common{differs}", "bold")
    for side, mark, style in (("a", "-", "red"), ("b", "+", "green")):
        for call in calls[side]:
            same = False
            out.line(
                f"{mark} {call['number']}. {call['agent']}.{call['playbook']} "
                f"({call['chars']} chars): {call['first_line']}",
                style,
            )
    for key in ("result", "error"):
        if data[key] is not None:
            same = False
            before, after = data[key]
            out.line(f"- {key}: {dumps(before, 200)}", "red")
            out.line(f"+ {key}: {dumps(after, 200)}", "green")
    if data["tool_errors"] is not None:
        same = False
        for index, mark, style in ((0, "-", "red"), (1, "+", "green")):
            for error in data["tool_errors"][index]:
                out.line(f"{mark} tool error: {_tool_error_text(error)}", style)
    if same:
        out.line("no difference in state, transcript, inputs, LLM calls or result", "green")
    return 0


class _Out:
    """Lines on stdout: coloured on a terminal, plain otherwise (control characters in
    stored text escaped either way)."""

    def __init__(self) -> None:
        from durably._console import fancy, make_console

        self.console = make_console(sys.stdout) if fancy(sys.stdout) else None

    def line(self, text: str, style: str | None = None) -> None:
        if self.console is None:
            print(printable(text))
        else:
            self.console.print(printable(text), style=style)


def _tool_error_text(error: dict[str, Any]) -> str:
    from durably._inspect import tool_error_text

    return tool_error_text(error)


async def _diff_one(args: argparse.Namespace, execution_id: str, a: int, b: int) -> int:
    from durably.timetravel import diff

    data = await diff(execution_id, a, b, config=cli_config(args))
    if args.json:
        print(dumps(data, indent=2))
        return 0
    print(printable(f"{execution_id}: checkpoint {a} -> {b}"))
    for name, agent in data["agents"].items():
        old, new = agent["call_stack"]
        if old != new:
            print(printable(f"  {name} call stack: {old} -> {new}"))
        for part in ("state", "locals"):
            prefix = "state." if part == "state" else ""
            for key, value in agent[part]["added"].items():
                print(printable(f"  {name} + {prefix}{key} = {dumps(value, 120)}"))
            for key in agent[part]["removed"]:
                print(printable(f"  {name} - {prefix}{key}"))
            for key, (before, after) in agent[part]["changed"].items():
                print(
                    printable(
                        f"  {name} ~ {prefix}{key}: {dumps(before, 60)} -> {dumps(after, 60)}"
                    )
                )
    for line in data["transcript"]:
        print(printable(f"  said: {line['agent']}: {line['text']}"))
    print(f"  LLM calls: +{data['llm_calls']}; journal entries: {len(data['journal'])}")
    for entry in data["journal"]:
        print(printable(f"    #{entry['seq']} agent {entry['agent']}: {entry['kind']}"))
    return 0


async def history_command(args: argparse.Namespace) -> int:
    """``durably history``: an execution's checkpoints, with their LLM calls and operations."""
    from dataclasses import asdict

    from durably._console import fancy, iso, relative
    from durably.timetravel import history

    points = await history(args.execution_id, config=cli_config(args))
    if args.json:
        print(json.dumps([asdict(p) for p in points], indent=2, ensure_ascii=False))
        return 0
    now = time.time()
    rows = []
    for p in points:
        agent = f"{p.agent_class}({p.agent})" if p.agent_class else (p.agent or "-")
        rows.append(
            (
                str(p.seq),
                iso(p.created_at),
                relative(p.created_at, now),
                agent,
                p.kind,
                str(p.llm_calls),
                p.status,
                ", ".join(p.operations) or "-",
                p.statement or "",
            )
        )
    if fancy(sys.stdout):
        from rich.table import Table

        from durably._console import STATUS_STYLE, agent_style, make_console

        table = Table(title=f"history of {args.execution_id}", title_justify="left")
        for name, justify in (
            ("SEQ", "right"),
            ("TIME", "left"),
            ("AGO", "right"),
            ("AGENT", "left"),
            ("KIND", "left"),
            ("LLM CALLS", "right"),
            ("STATUS", "left"),
            ("OPERATIONS", "left"),
            ("STATEMENT", "left"),
        ):
            table.add_column(
                name,
                justify=justify,  # type: ignore[arg-type]
                overflow="fold" if name == "STATEMENT" else "ellipsis",
            )
        for p, row in zip(points, rows, strict=True):
            cells = [printable(cell) for cell in row]
            table.add_row(
                *cells[:3],
                _styled(cells[3], agent_style(p.agent_class or "")),
                cells[4],
                cells[5],
                _styled(cells[6], STATUS_STYLE.get(p.status)),
                cells[7],
                _styled(cells[8], "dim"),
            )
        make_console(sys.stdout).print(table)
        return 0
    print(
        f"{'SEQ':>5} {'TIME':<19} {'AGO':>10} {'AGENT':<22} {'KIND':<9} {'LLM CALLS':>9}  "
        f"{'STATUS':<9} {'OPERATIONS':<28} STATEMENT"
    )
    for row in rows:
        print(
            printable(
                f"{row[0]:>5} {row[1]:<19} {row[2]:>10} {row[3]:<22} {row[4]:<9} "
                f"{row[5]:>9}  {row[6]:<9} {row[7]:<28} {row[8]}".rstrip()
            )
        )
    return 0


def _styled(text: str, style: str | None) -> Any:
    from rich.text import Text

    return Text(text, style=style or "")
