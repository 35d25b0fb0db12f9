"""Read executions back for people: what ``durably ls`` and ``durably show`` print, and the
seed API's :class:`Checkpoint` view."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from durably._executor import statement_spans
from durably._journal import DeltaDoc, RestoredAgent, SnapshotDoc, stack_label
from durably.checkpoint import CheckpointManager, LoadedExecution
from durably.storage import META_STATUS, CheckpointProvider

__all__ = [
    "AgentView",
    "Checkpoint",
    "checkpoint_view",
    "describe_execution",
    "jsonable",
    "list_executions",
    "load_llm_calls",
    "render_show",
    "tool_error_text",
    "usage_totals",
    "without_measurements",
]


def jsonable(value: Any) -> Any:
    """A JSON-compatible rendering of a stored value (lossy for exotic types)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return repr(value)


async def describe_execution(
    manager: CheckpointManager, at: int | None = None
) -> dict[str, Any] | None:
    """Everything ``show --json`` prints about an execution (as of its latest checkpoint, or
    of checkpoint ``at``), or None if it does not exist.

    Inert: nothing named by the stored data is imported or run (a class or module that is
    not imported shows as a placeholder).
    """
    loaded = await manager.load_execution(at=at, inert=True)
    if loaded is None:
        return None
    count = 0
    stored_bytes = 0
    last_seq = -1
    async for info in manager.provider.iter_checkpoints(manager.execution_id):
        count += 1
        stored_bytes += info.size
        last_seq = info.seq
    transcript: dict[tuple[str, int], dict[str, Any]] = {}
    calls: dict[tuple[str, int], dict[str, Any]] = {}
    agents: dict[str, Any] = {}
    open_calls: list[dict[str, Any]] = []
    for agent_id, (seq, raw, state, local_vars) in sorted(loaded.snapshots.items()):
        doc = SnapshotDoc.from_doc(raw)
        restored = RestoredAgent(doc, seq)
        for item in doc.transcript:
            transcript[(item["id"], item["index"])] = dict(item)
        for record in doc.llm_log:
            calls[(record["id"], record["index"])] = dict(record)
        frame = doc.frame
        stack = [stack_label(frame["playbook"], frame.get("step"))] if frame else []
        position = None
        if frame is not None:
            position = {
                "playbook": frame["playbook"],
                "llm_call": frame.get("calls", 0),
                "executed_statements": frame.get("executed", 0),
                "offset": frame.get("offset", 0),
            }
        agents[doc.agent_class] = {
            "id": agent_id,
            "state": jsonable(state),
            "call_stack": stack,
            "locals": jsonable(local_vars),
            "phase": doc.phase,
            "position": position,
        }
        for delta_seq, raw_delta in loaded.deltas_of(agent_id, seq):
            delta = DeltaDoc.from_doc(raw_delta, delta_seq)
            restored.add_delta(delta, delta_seq)
            for entry in delta.entries:
                for item in entry.transcript:
                    transcript[(item["id"], item["index"])] = dict(item)
            for record in delta.log:
                calls[(record["id"], record["index"])] = dict(record)
        open_calls += _calls_in_progress(doc.agent_class, agent_id, restored, calls)

    def order(item: dict[str, Any]) -> tuple[int, int, int]:
        return (item.get("after", 0), int(item["id"]), item["index"])

    if loaded.latest_seq < last_seq:  # a point in the past (--at): its status then
        status, lease = loaded.status or "running", None
    else:
        status, lease = await owner_status(manager.provider, manager.execution_id, loaded.status)
    waiting = None
    if status in _MAY_WAIT and loaded.latest_seq >= last_seq:
        waiting = await _waiting(manager)
        if waiting is not None:
            status = WAITING
    ordered = sorted(calls.values(), key=order)
    from durably._events import journal_events

    errors, inputs = await journal_events(manager, loaded.latest_seq)
    return {
        "execution_id": manager.execution_id,
        "status": status,
        "waiting": waiting,
        "lease": lease,
        "checkpoints": count,
        "bytes": stored_bytes,
        "latest_seq": loaded.latest_seq,
        "updated_at": loaded.latest_created_at,
        "program": loaded.header.get("program"),
        "llm": loaded.header.get("llm"),
        "transcript": [
            {"agent": i["agent"], "id": i["id"], "text": i["text"]}
            for i in sorted(transcript.values(), key=order)
        ],
        "agents": agents,
        "llm_calls": [
            {
                "agent": i["agent"],
                "id": i["id"],
                "index": i["index"],
                "playbook": i["playbook"],
                "prompt": i["prompt"],
                "response": i["response"],
                "usage": jsonable(i.get("usage")),
            }
            for i in ordered
        ],
        "llm_calls_in_progress": open_calls,
        "usage": usage_totals(i.get("usage") for i in ordered),
        "load_llm_calls": load_llm_calls(loaded.header),
        "result": jsonable(loaded.result) if loaded.status != "failed" else None,
        "error": str(loaded.result) if loaded.status == "failed" else None,
        "tool_errors": jsonable(errors),
        "inputs": jsonable(inputs),
    }


def _calls_in_progress(
    agent_class: str,
    agent_id: str,
    restored: RestoredAgent,
    ended: dict[tuple[str, int], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The agent's LLM calls that had not ended at the checkpoint: a response still
    streaming (``complete`` false: resume asks for the rest), or one received in full whose
    code was still running (``complete`` true: resume runs the rest of its code and asks
    nothing). Their call records (``llm_calls``) are written only when they end."""
    return [
        {
            "agent": agent_class,
            "id": agent_id,
            "index": index,
            "playbook": entry.playbook,
            "prompt": entry.prompt,
            "response": entry.text,
            "complete": entry.done,
            "usage": jsonable(entry.usage),
        }
        for index, entry in sorted(restored.llm.items())
        if (agent_id, index) not in ended
    ]


def load_llm_calls(header: dict[str, Any]) -> list[dict[str, Any]]:
    """The LLM calls a program loader made before the execution existed (a ``.pb``'s
    compile step), as its header lists them (:data:`durably._loaders.LOAD_LLM_CALLS`).

    Plain data read back, never imported or run. An entry that is not the documented
    object is shown as ``malformed`` (with its text), not dropped.
    """
    from durably._loaders import LOAD_LLM_CALLS

    raw = header.get(LOAD_LLM_CALLS)
    if raw is None:
        return []
    entries = raw if isinstance(raw, list) else [raw]
    out = []
    for entry in entries:
        fields = ("agent", "playbook", "prompt_sha256", "response")
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(key), str) for key in fields
        ):
            out.append({"malformed": repr(jsonable(entry))[:500]})
            continue
        call = {key: entry[key] for key in fields}
        call["usage"] = jsonable(entry.get("usage"))
        out.append(call)
    return out


def without_measurements(view: dict[str, Any]) -> dict[str, Any]:
    """``view`` (a :func:`describe_execution` result) without what a crash may change
    without changing the run, for comparing two runs of one program: everything else must
    be equal.

    Left out: timings, and the usage each provider reported (tokens, model, finish
    reason). A report arrives after a response's code ended; a process killed in between
    loses it (the resumed run does not ask again for a response whose code already ran),
    and a response continued after a crash reports the continuation's usage. The number
    of calls stays.
    """
    out = dict(view)
    for key in ("llm_calls", "llm_calls_in_progress", "load_llm_calls"):
        if key in view:
            out[key] = [{k: v for k, v in call.items() if k != "usage"} for call in view[key]]
    if isinstance(view.get("usage"), dict):
        out["usage"] = {"calls": view["usage"].get("calls")}
    return out


def usage_totals(usages: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """Totals of the LLM calls' usage records: calls, tokens (as providers reported them;
    ``calls_reported`` says how many calls reported any) and time spent streaming."""
    totals = {
        "calls": 0,
        "calls_reported": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_ms": 0.0,
    }
    for usage in usages:
        totals["calls"] += 1
        if not usage:
            continue
        if usage.get("prompt_tokens") is not None or usage.get("completion_tokens") is not None:
            totals["calls_reported"] += 1
        totals["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        totals["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        totals["latency_ms"] += float(usage.get("latency_ms") or 0.0)
    totals["latency_ms"] = round(totals["latency_ms"], 1)
    return totals


async def owner_status(
    provider: CheckpointProvider, execution_id: str, status: str | None
) -> tuple[str, dict[str, Any] | None]:
    """The status to show and the lease holder's description (None once finished).

    A ``running`` execution (as its latest checkpoint says) is shown as ``running`` only
    while its owner may be alive: ``crashed`` when the owner is provably dead (resumable
    now), ``stale`` when its lease expired, ``stopped`` when the lease was released (an
    interrupted run, or a submitted execution no worker started yet).
    """
    from durably._liveness import inspect_owner

    if status not in (None, "running"):
        return status, None  # finished: who last held it no longer matters
    state = await inspect_owner(provider, execution_id)
    return state.status, state.as_json() if state.lease is not None else None


WAITING = "waiting for input"
_MAY_WAIT = ("running", "stopped")
"""Where an agent that waits for the user's answer is shown as ``waiting for input``: its
owner is alive at a prompt, or released the lease when no answer was left (a crashed or
stale owner stays ``crashed``/``stale``: resuming it is what is needed first)."""


async def _waiting(manager: CheckpointManager) -> dict[str, Any] | None:
    from durably._events import waiting_for_input
    from durably.errors import DurablyError

    try:
        return await waiting_for_input(manager)
    except DurablyError:  # unreadable: `ls` says damaged where it matters
        return None


async def list_executions(provider: CheckpointProvider) -> list[dict[str, Any]]:
    """One row per execution: id, status, checkpoints, bytes, last activity."""
    rows = []
    async for execution in provider.iter_executions():
        count = 0
        size = 0
        last = None
        async for info in provider.iter_checkpoints(execution.execution_id):
            count += 1
            size += info.size
            last = info
        status = last.metadata.get(META_STATUS, "running") if last else "empty"
        if status == "running":
            status, _ = await owner_status(provider, execution.execution_id, status)
            if (
                status in _MAY_WAIT
                and await _waiting(CheckpointManager(execution.execution_id, provider)) is not None
            ):
                status = WAITING
        rows.append(
            {
                "execution_id": execution.execution_id,
                "status": status,
                "agents": int(last.metadata.get("durably.agents", "0")) if last else 0,
                "checkpoints": count,
                "bytes": size,
                "updated_at": last.created_at if last else execution.updated_at,
            }
        )
    return rows


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in "\n\t"}


def _printable(text: str) -> str:
    """``text`` with terminal control characters escaped: stored text (a transcript, a
    crafted checkpoint) cannot move the cursor, recolour or retitle the terminal."""
    return text.translate(_CONTROL)


def _lease_lines(data: dict[str, Any]) -> list[str]:
    lease = data.get("lease")
    if not lease or data["status"] in ("completed", "failed"):
        return []
    verdict = {
        "alive": "alive",
        "dead": "dead",
        "unknown": "maybe alive",
        "released": "released the lease",
        "none": "none",
    }[lease["liveness"]]
    left = lease["expires_at"] - time.time()
    when = f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"
    line = (
        (
            f"  owner: {lease['host']}:{lease['pid']} ({verdict}: {lease['reason']}), "
            f"epoch {lease['epoch']}, lease {when}"
        )
        if lease["host"]
        else (f"  owner: {lease['owner']} ({verdict}), epoch {lease['epoch']}, lease {when}")
    )
    lines = [_printable(line)]
    if data["status"] in ("crashed", "stale", "stopped"):
        lines.append(f"  resume it with: durably resume {data['execution_id']}")
    return lines


def _waiting_lines(data: dict[str, Any]) -> list[str]:
    waiting = data.get("waiting")
    if not waiting:
        return []
    lines = [
        f"  waiting for input: {waiting['agent']}({waiting['id']}) at `{waiting['statement']}`"
    ]
    if data["status"] == WAITING and (data.get("lease") or {}).get("liveness") != "alive":
        lines.append(f"  answer with: durably resume {data['execution_id']} --input TEXT")
    return lines


def tool_error_text(error: dict[str, Any]) -> str:
    """One journaled tool failure: where, which tool, the exception, the statement."""
    where = f"{error['agent']}({error['id']})"
    if error.get("playbook"):
        where += f".{error['playbook']}"
    statement = f" in `{error['statement']}`" if error.get("statement") else ""
    return f"{where}: {error['operation']} raised {error['type']}: {error['message']}{statement}"


def render_show(data: dict[str, Any]) -> str:
    """The human form of :func:`describe_execution`'s result (control characters in the
    stored text escaped)."""
    return _printable(_render_show(data))


def _render_show(data: dict[str, Any]) -> str:
    lines = [
        f"execution {data['execution_id']}: {data['status']}",
        f"  program: {data.get('program')}   llm: {data.get('llm')}",
        *_lease_lines(data),
        *_waiting_lines(data),
        f"  checkpoints: {data['checkpoints']} ({data['bytes']:,} bytes), latest "
        f"#{data['latest_seq']}",
    ]
    for name, agent in data["agents"].items():
        lines.append(
            f"agent {name} ({agent['id']}) - {agent['phase']}, call stack {agent['call_stack']}"
        )
        position = agent.get("position")
        if position:
            lines.append(
                f"    at: {position['playbook']} LLM call {position['llm_call']}, "
                f"{position['executed_statements']} statement(s) executed (response "
                f"offset {position['offset']})"
            )
        for key, value in agent["state"].items():
            lines.append(f"    state.{key} = {json.dumps(value, ensure_ascii=False)[:200]}")
        for key, value in agent["locals"].items():
            lines.append(f"    {key} = {json.dumps(value, ensure_ascii=False)[:200]}")
    lines.append("transcript:")
    for item in data["transcript"]:
        lines.append(f"    {item['agent']}: {item['text']}")
    inputs = data.get("inputs") or []
    if inputs:
        lines.append(f"user input: {len(inputs)} answer(s)")
        for item in inputs:
            lines.append(f"    you (to {item['agent']}): {item['text']}")
    for error in data.get("tool_errors") or []:
        lines.append(f"tool error: {tool_error_text(error)}")
    totals = data.get("usage") or usage_totals(c.get("usage") for c in data["llm_calls"])
    tokens = ""
    if totals["calls_reported"]:
        tokens = (
            f" - tokens: {totals['prompt_tokens']:,} prompt + "
            f"{totals['completion_tokens']:,} completion = "
            f"{totals['prompt_tokens'] + totals['completion_tokens']:,}"
        )
        if totals["calls_reported"] < totals["calls"]:
            tokens += f" ({totals['calls'] - totals['calls_reported']} call(s) reported none)"
    lines.append(f"LLM calls: {len(data['llm_calls'])}{tokens}")
    for number, call in enumerate(data["llm_calls"], 1):
        first = call["response"].strip().splitlines()
        summary = f": {first[1][:60]}" if len(first) > 1 else ""
        usage = call.get("usage") or {}
        cost = [f"{len(call['response'])} chars"]
        if usage.get("prompt_tokens") is not None or usage.get("completion_tokens") is not None:
            cost.append(
                f"{usage.get('prompt_tokens') or 0}+{usage.get('completion_tokens') or 0} tokens"
            )
        if usage.get("latency_ms") is not None:
            cost.append(f"{usage['latency_ms']:.0f} ms")
        lines.append(
            f"    {number}. {call['agent']}.{call['playbook']} ({', '.join(cost)}){summary}"
        )
    for call in data.get("llm_calls_in_progress") or []:
        how = "response complete, its code running" if call["complete"] else "streaming"
        lines.append(
            f"    in progress: {call['agent']}.{call['playbook']} "
            f"({len(call['response'])} chars received, {how})"
        )
    lines.extend(_load_call_lines(data.get("load_llm_calls") or []))
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    if data["result"] is not None:
        lines.append(f"result: {json.dumps(data['result'], ensure_ascii=False)}")
    return "\n".join(lines)


def _load_call_lines(calls: list[dict[str, Any]]) -> list[str]:
    if not calls:
        return []
    lines = [f"LLM calls loading the program (before the execution started): {len(calls)}"]
    for number, call in enumerate(calls, 1):
        if "malformed" in call:
            lines.append(f"    {number}. malformed entry: {call['malformed'][:120]}")
            continue
        first = [line for line in call["response"].strip().splitlines() if line.strip()]
        summary = f": {first[0][:60]}" if first else ""
        lines.append(
            f"    {number}. {call['agent']}.{call['playbook']} "
            f"({len(call['response'])} chars, prompt sha256 {call['prompt_sha256'][:12]})"
            f"{summary}"
        )
    return lines


# ------------------------------------------------------------------ the seed API's view


@dataclass
class AgentView:
    """One agent as a checkpoint shows it."""

    agent_id: str
    agent_class: str
    state: dict[str, Any]
    namespace: dict[str, Any]
    call_stack: list[str]
    phase: str
    transcript: list[dict[str, Any]]
    llm_response: str
    executed_statements: list[tuple[int, int]]
    current_statement: tuple[int, int] | None
    snapshot_seq: int
    replay_entries: int


@dataclass
class Checkpoint:
    """A checkpoint read back, in human terms.

    Attributes:
        execution_id: The execution.
        seq: The checkpoint's sequence number (the counter).
        namespace: The first agent's bottom-frame variables as of its last snapshot.
        execution_state: ``{"agents": {id: {"class", "state", "call_stack", "phase"}},
            "call_stack": [...], "state": {...}}`` (the latter two for the first agent).
        metadata: ``llm_response`` (the response so far), ``executed_statements``
            (``(start, end)`` offsets into it), ``current_statement``, ``counter``,
            ``timestamp`` and the stored metadata.
        agents: Every agent's :class:`AgentView`, by id.
    """

    execution_id: str
    seq: int
    namespace: dict[str, Any]
    execution_state: dict[str, Any]
    metadata: dict[str, Any]
    agents: dict[str, AgentView] = field(default_factory=dict)
    status: str = "running"
    header: dict[str, Any] = field(default_factory=dict)
    result: Any = None


def checkpoint_view(execution_id: str, loaded: LoadedExecution) -> Checkpoint:
    """The seed API's :class:`Checkpoint` of a loaded execution."""
    agents: dict[str, AgentView] = {}
    for agent_id, (seq, _raw, state, local_vars) in sorted(loaded.snapshots.items()):
        restored = loaded.restored(agent_id)
        doc = restored.snapshot
        frame = doc.frame
        response = ""
        if frame is not None and frame.get("llm_index") in restored.llm:
            response = restored.llm[frame["llm_index"]].text
        stack = [stack_label(frame["playbook"], frame.get("step"))] if frame else []
        transcript = [dict(item) for item in doc.transcript]
        agents[agent_id] = AgentView(
            agent_id=agent_id,
            agent_class=doc.agent_class,
            state=state,
            namespace=local_vars,
            call_stack=stack,
            phase=doc.phase,
            transcript=transcript,
            llm_response=response,
            executed_statements=statement_spans(response, (frame or {}).get("executed", 0)),
            current_statement=None,
            snapshot_seq=seq,
            replay_entries=len(restored.entries),
        )
    first = next(iter(agents.values()), None)
    return Checkpoint(
        execution_id=execution_id,
        seq=loaded.latest_seq,
        namespace=dict(first.namespace) if first else {},
        execution_state={
            "agents": {
                a.agent_id: {
                    "class": a.agent_class,
                    "state": a.state,
                    "call_stack": a.call_stack,
                    "phase": a.phase,
                }
                for a in agents.values()
            },
            "call_stack": first.call_stack if first else [],
            "state": first.state if first else {},
        },
        metadata={
            "llm_response": first.llm_response if first else "",
            "executed_statements": first.executed_statements if first else [],
            "current_statement": first.current_statement if first else None,
            "counter": loaded.latest_seq,
            "timestamp": loaded.latest_created_at,
            **dict(loaded.metadata),
        },
        agents=agents,
        status=loaded.status,
        header=loaded.header,
        result=loaded.result,
    )
