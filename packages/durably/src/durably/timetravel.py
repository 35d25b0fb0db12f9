"""Resume from any call: fork an execution at an earlier checkpoint, inspect and diff.

Any checkpoint is a valid point to resume from -- that is what crash recovery does after a
crash right after it. A *fork* copies an execution's checkpoints up to the chosen one
(and the blobs they reference) into a new execution; resuming the fork replays the
journal up to that point and makes fresh LLM calls from there, possibly with another
model or another scripted file. The original execution is not touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from durably._events import JournalReader
from durably._journal import DeltaDoc, doc_type, llm_progress
from durably.checkpoint import META_KIND, CheckpointManager, HistoryCheck
from durably.errors import DurablyError, NotFoundError
from durably.storage import META_BASE, META_STATUS, validate_execution_id

__all__ = [
    "CheckpointPoint",
    "checkpoint_points",
    "compare",
    "compare_views",
    "diff",
    "diff_checkpoints",
    "fork",
    "fork_execution",
    "history",
    "parse_point",
    "seq_after_llm_call",
]


@dataclass(frozen=True)
class CheckpointPoint:
    """One checkpoint of an execution, as a point in its history."""

    seq: int
    kind: str
    """``snapshot``, ``delta`` or ``final``."""
    agent: str | None
    created_at: float
    llm_calls: int
    """How many LLM responses had been fully received when this checkpoint was written."""
    status: str
    agent_class: str | None = None
    """The class of the agent that wrote it (None for the execution's final record)."""
    operations: tuple[str, ...] = ()
    """What it records: the operations completed (``say``, ``yield``, ``step``,
    ``tool:Name``, ...), ``llm:Playbook`` for LLM text that arrived (``llm:Playbook
    done`` once complete), ``snapshot`` (with the agent's phase) or ``final``."""
    statement: str | None = None
    """The first line of the LLM-code statement the agent's response had reached (the
    one running, or the last one run), when the checkpoint holds or follows LLM text."""


async def _scan(manager: CheckpointManager) -> tuple[list[CheckpointPoint], list[tuple[Any, int]]]:
    """The checkpoints, and the LLM calls in the order they started with the seq of the
    first checkpoint that holds their whole response.

    Inert (nothing named by the data is imported or run). The stored history must be
    complete and chained from the latest checkpoint's base (the oldest checkpoint resuming
    needs) to the latest; below the base, retention may have removed any checkpoint.

    Raises:
        CorruptHistoryError: A checkpoint is missing in between, or replaced.
    """
    started: dict[tuple[str, int], tuple[int, int, int, int]] = {}
    received: dict[tuple[str, int], int] = {}
    points = []
    provider = manager.provider
    infos = [info async for info in provider.iter_checkpoints(manager.execution_id)]
    base = 0
    if infos:
        try:
            base = max(infos[0].seq, int(infos[-1].metadata.get(META_BASE, infos[0].seq)))
        except ValueError:
            base = infos[0].seq
    history = HistoryCheck(manager.execution_id, base, infos[-1].seq if infos else -1)
    for info in infos:
        history.listed(info.seq)
    history.check_listing(pruned_ok=False)
    reader = JournalReader()
    for info in infos:
        try:
            stored = await provider.load_checkpoint(manager.execution_id, info.seq)
        except NotFoundError:
            if info.seq < base:
                continue  # pruned since the listing: below the base, that is retention
            raise
        if info.seq >= base:
            history.follow(stored)
        doc = (await manager.decode(stored, unresolved=[]))["doc"]
        agent = doc.get("agent")
        for index, after, done in llm_progress(doc):
            key = (agent, index)
            started.setdefault(key, (after, info.seq, int(agent), index))
            if done:
                received.setdefault(key, info.seq)
        for item in doc.get("log", []) + doc.get("llm_log", []):
            key = (item["id"], item["index"])
            started.setdefault(
                key, (item.get("after", 0), info.seq, int(item["id"]), item["index"])
            )
            received.setdefault(key, info.seq)
        agent_class, operations, statement = reader.read(doc)
        points.append(
            CheckpointPoint(
                seq=info.seq,
                kind=info.metadata.get(META_KIND, doc.get("type", "?")),
                agent=agent,
                created_at=info.created_at,
                llm_calls=len(received),
                status=info.metadata.get(META_STATUS, "running"),
                agent_class=agent_class,
                operations=operations,
                statement=statement,
            )
        )
    history.check_links()
    calls = sorted((order, received.get(key, -1)) for key, order in started.items())
    return points, calls


async def checkpoint_points(manager: CheckpointManager) -> list[CheckpointPoint]:
    """Every stored checkpoint of the execution with its LLM-call number, in order."""
    points, _ = await _scan(manager)
    return points


async def seq_after_llm_call(manager: CheckpointManager, number: int) -> int:
    """The first checkpoint that holds the whole response of the ``number``-th LLM call
    (calls numbered in the order they started, from 1)."""
    _, calls = await _scan(manager)
    if not 1 <= number <= len(calls) or calls[number - 1][1] < 0:
        raise NotFoundError(
            f"execution {manager.execution_id!r} has no completed LLM call "
            f"#{number} in its stored checkpoints ({len(calls)} calls)"
        )
    return calls[number - 1][1]


async def fork_execution(manager: CheckpointManager, at: int, new_id: str) -> int:
    """Create execution ``new_id`` whose state is exactly that of checkpoint ``at``.

    Returns:
        How many checkpoints were copied.
    """
    validate_execution_id(new_id)
    provider = manager.provider
    if await provider.load_latest_checkpoint(new_id) is not None:
        raise DurablyError(f"execution {new_id!r} already exists")
    loaded = await manager.load_execution(at=at, inert=True)  # checks base..at is complete
    if loaded is None:
        raise NotFoundError(f"no execution {manager.execution_id!r}")
    chosen = await provider.load_checkpoint(manager.execution_id, at)
    if chosen.metadata.get(META_KIND) == "final" or loaded.status == "completed":
        raise DurablyError(
            f"checkpoint {at} of {manager.execution_id!r} marks the end of the "
            "execution: there is nothing left to run from it; pick an earlier one"
        )
    base = min((seq for seq, *_ in loaded.snapshots.values()), default=at)
    copied = 0
    blobs: set[str] = set()
    async for info in provider.iter_checkpoints(manager.execution_id, after=base - 1):
        if info.seq > at:
            break
        stored = await provider.load_checkpoint(manager.execution_id, info.seq)
        await manager.decode(stored, blobs, unresolved=[])
        for digest in sorted(blobs):
            await provider.put_blob(
                new_id, await provider.get_blob(manager.execution_id, digest), digest=digest
            )
        blobs.clear()
        metadata = dict(info.metadata)
        metadata["durably.forked-from"] = f"{manager.execution_id}@{info.seq}"
        await provider.save_checkpoint(new_id, info.seq, stored.data, metadata=metadata)
        copied += 1
    return copied


def _compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    added = {k: v for k, v in new.items() if k not in old}
    removed = sorted(k for k in old if k not in new)
    changed = {k: [old[k], new[k]] for k in new if k in old and old[k] != new[k]}
    return {"added": added, "removed": removed, "changed": changed}


async def diff_checkpoints(manager: CheckpointManager, a: int, b: int) -> dict[str, Any]:
    """What changed between checkpoints ``a`` and ``b`` (``a < b``): per agent variables,
    state and call stack; the transcript lines and journal entries written in between."""
    from durably._inspect import describe_execution

    if a >= b:
        raise ValueError("diff needs two checkpoints A < B")
    before = await describe_execution(manager, at=a)
    after = await describe_execution(manager, at=b)
    if before is None or after is None:
        raise NotFoundError(f"no execution {manager.execution_id!r}")
    agents: dict[str, Any] = {}
    for name in sorted(set(before["agents"]) | set(after["agents"])):
        old = before["agents"].get(name, {"state": {}, "locals": {}, "call_stack": []})
        new = after["agents"].get(name, {"state": {}, "locals": {}, "call_stack": []})
        agents[name] = {
            "state": _compare(old["state"], new["state"]),
            "locals": _compare(old["locals"], new["locals"]),
            "call_stack": [old["call_stack"], new["call_stack"]],
        }
    journal = []
    history = HistoryCheck(manager.execution_id, a, b)
    async for info in manager.provider.iter_checkpoints(manager.execution_id, after=a - 1):
        if info.seq > b:
            break
        history.listed(info.seq)
    history.check_listing(pruned_ok=False)
    for seq in history.present:
        stored = await manager.provider.load_checkpoint(manager.execution_id, seq)
        history.follow(stored)
        if seq == a:
            continue
        doc = (await manager.decode(stored, unresolved=[]))["doc"]
        kind = doc_type(doc)
        if kind == "delta":
            for entry in DeltaDoc.from_doc(doc, seq).entries:
                journal.append(
                    {"seq": seq, "agent": doc.get("agent"), "op": entry.index, "kind": entry.kind}
                )
        else:
            journal.append({"seq": seq, "agent": doc.get("agent"), "kind": kind})
    history.check_links()
    seen = {(t["id"], t["text"]) for t in before["transcript"]}
    return {
        "execution_id": manager.execution_id,
        "from": a,
        "to": b,
        "agents": agents,
        "transcript": [t for t in after["transcript"] if (t["id"], t["text"]) not in seen],
        "llm_calls": len(after["llm_calls"]) - len(before["llm_calls"]),
        "journal": journal,
    }


# ------------------------------------------------------------ convenience API


async def _with_manager(execution_id: str, store: str | None, config: Any, work: Any) -> Any:
    from durably import open_store
    from durably.config import load_config

    config = config or load_config(overrides={"store": store})
    async with open_store(config=config) as provider:
        return await work(CheckpointManager(execution_id, provider, config=config))


async def fork(
    execution_id: str,
    *,
    at: int | None = None,
    at_llm_call: int | None = None,
    new_id: str | None = None,
    store: str | None = None,
    config: Any = None,
) -> str:
    """Fork ``execution_id`` at checkpoint ``at`` (or right after its ``at_llm_call``-th
    LLM response was received) into a new execution; return the new id. Resume it with
    :func:`durably.resume_execution` (optionally with another ``llm``)."""
    from durably.runner import new_execution_id

    if (at is None) == (at_llm_call is None):
        raise ValueError("give exactly one of at= and at_llm_call=")
    target = new_id or new_execution_id()

    async def work(manager: CheckpointManager) -> str:
        seq = at if at is not None else await seq_after_llm_call(manager, at_llm_call or 0)
        await fork_execution(manager, seq, target)
        return target

    result: str = await _with_manager(execution_id, store, config, work)
    return result


async def diff(
    execution_id: str, a: int, b: int, *, store: str | None = None, config: Any = None
) -> dict[str, Any]:
    """:func:`diff_checkpoints` on an execution of the configured (or given) store."""
    result: dict[str, Any] = await _with_manager(
        execution_id, store, config, lambda m: diff_checkpoints(m, a, b)
    )
    return result


async def history(
    execution_id: str, *, store: str | None = None, config: Any = None
) -> list[CheckpointPoint]:
    """:func:`checkpoint_points` on an execution of the configured (or given) store."""
    result: list[CheckpointPoint] = await _with_manager(
        execution_id, store, config, checkpoint_points
    )
    return result


# ------------------------------------------------------------ comparing two points


def parse_point(text: str) -> tuple[str, int | None]:
    """``EXECUTION[@CHECKPOINT]`` as ``(execution id, checkpoint or None for the latest)``.

    Raises:
        ValueError: The checkpoint is not a non-negative integer.
    """
    execution_id, at, seq = text.rpartition("@") if "@" in text else (text, "", "")
    if not at:
        return text, None
    if not seq.isdigit():
        raise ValueError(
            f"cannot read {text!r}: use EXECUTION or EXECUTION@CHECKPOINT "
            "(a checkpoint number, see `durably history`)"
        )
    return execution_id, int(seq)


def _call_summary(number: int, call: dict[str, Any]) -> dict[str, Any]:
    lines = [
        line
        for line in call["response"].strip().splitlines()
        if line.strip() and not line.startswith(("```", "#"))
    ]
    return {
        "number": number,
        "agent": call["agent"],
        "playbook": call["playbook"],
        "first_line": lines[0][:100] if lines else "",
        "chars": len(call["response"]),
    }


def compare_views(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What differs between two :func:`durably._inspect.describe_execution` views (two
    executions, or two checkpoints of one): per agent state, variables and call stack;
    the transcript, the user's inputs and the LLM calls after their common beginning;
    status, result and error."""
    agents: dict[str, Any] = {}
    empty: dict[str, Any] = {"state": {}, "locals": {}, "call_stack": []}
    for name in sorted(set(a["agents"]) | set(b["agents"])):
        old, new = a["agents"].get(name, empty), b["agents"].get(name, empty)
        agents[name] = {
            "state": _compare(old["state"], new["state"]),
            "locals": _compare(old["locals"], new["locals"]),
            "call_stack": [old["call_stack"], new["call_stack"]],
        }

    def split(left: list[Any], right: list[Any]) -> tuple[int, list[Any], list[Any]]:
        common = 0
        while common < min(len(left), len(right)) and left[common] == right[common]:
            common += 1
        return common, left[common:], right[common:]

    said = (
        [(t["agent"], t["text"]) for t in a["transcript"]],
        [(t["agent"], t["text"]) for t in b["transcript"]],
    )
    common, only_a, only_b = split(*said)

    # LLM calls are matched by what they are (agent, playbook, prompt, response), not by
    # position: a call that started first may end last (a playbook that calls another).
    def key(call: dict[str, Any]) -> str:
        return json.dumps(
            [call["id"], call["playbook"], call["prompt"], call["response"]],
            sort_keys=True,
            default=repr,
        )

    keys_a = [key(c) for c in a["llm_calls"]]
    keys_b = [key(c) for c in b["llm_calls"]]
    left = list(keys_b)
    only_calls_a = []
    for number, (call, k) in enumerate(zip(a["llm_calls"], keys_a, strict=True), 1):
        if k in left:
            left.remove(k)
        else:
            only_calls_a.append(_call_summary(number, call))
    right = list(keys_a)
    only_calls_b = []
    for number, (call, k) in enumerate(zip(b["llm_calls"], keys_b, strict=True), 1):
        if k in right:
            right.remove(k)
        else:
            only_calls_b.append(_call_summary(number, call))
    prompts_a = {
        json.dumps([c["id"], c["playbook"], c["prompt"]], default=repr) for c in a["llm_calls"]
    }
    answered_differently = sum(
        1
        for number, call in enumerate(b["llm_calls"], 1)
        if any(s["number"] == number for s in only_calls_b)
        and json.dumps([call["id"], call["playbook"], call["prompt"]], default=repr) in prompts_a
    )
    inputs = ([i["text"] for i in a.get("inputs", [])], [i["text"] for i in b.get("inputs", [])])
    same_inputs, inputs_a, inputs_b = split(*inputs)
    return {
        "a": {
            "execution_id": a["execution_id"],
            "checkpoint": a["latest_seq"],
            "status": a["status"],
        },
        "b": {
            "execution_id": b["execution_id"],
            "checkpoint": b["latest_seq"],
            "status": b["status"],
        },
        "agents": agents,
        "transcript": {
            "common": common,
            "a": [{"agent": x, "text": y} for x, y in only_a],
            "b": [{"agent": x, "text": y} for x, y in only_b],
        },
        "inputs": {"common": same_inputs, "a": inputs_a, "b": inputs_b},
        "llm_calls": {
            "common": len(keys_a) - len(only_calls_a),
            "same_prompt_other_response": answered_differently,
            "a": only_calls_a,
            "b": only_calls_b,
        },
        "tool_errors": [a.get("tool_errors", []), b.get("tool_errors", [])]
        if a.get("tool_errors", []) != b.get("tool_errors", [])
        else None,
        "result": [a["result"], b["result"]] if a["result"] != b["result"] else None,
        "error": [a["error"], b["error"]] if a["error"] != b["error"] else None,
    }


async def _forked_from(provider: Any, execution_id: str) -> str | None:
    """The point an execution was forked from (its last copied checkpoint says)."""
    origin = None
    async for info in provider.iter_checkpoints(execution_id):
        origin = info.metadata.get("durably.forked-from", origin)
    return origin


async def compare(
    a: str, b: str, *, store: str | None = None, config: Any = None
) -> dict[str, Any]:
    """Compare two points ``EXECUTION[@CHECKPOINT]`` (see :func:`compare_views`): a fork
    against its original, a resumed run against a baseline, two checkpoints of one run.
    ``forked_from`` names the point each one was forked from, if it was."""
    from durably import open_store
    from durably._inspect import describe_execution
    from durably.config import load_config

    config = config or load_config(overrides={"store": store})
    views = []
    origins = []
    async with open_store(config=config) as provider:
        for text in (a, b):
            execution_id, at = parse_point(text)
            manager = CheckpointManager(execution_id, provider, config=config)
            view = await describe_execution(manager, at=at)
            if view is None:
                raise NotFoundError(f"no execution {execution_id!r} in {provider.describe()}")
            views.append(view)
            origins.append(await _forked_from(provider, execution_id))
    result = compare_views(views[0], views[1])
    result["a"]["forked_from"], result["b"]["forked_from"] = origins
    return result
