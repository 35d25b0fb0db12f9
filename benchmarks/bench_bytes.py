"""Bytes written per await as the state grows and as the history grows.

Everything is measured from the store (filesystem provider; the other providers store
the same envelopes plus a few bytes of framing): the sizes of an execution's checkpoints
(``CheckpointInfo.size``) and blobs (``BlobInfo.size``), as ``iter_checkpoints`` and
``list_blobs`` report them.

1. **State size.** The agent state is a list of 1 KB strings totalling 1 KB ... 10 MB;
   every await replaces one item (1 KB changes). Bytes per await are marginal: the run
   with N awaits minus the same program with none (which still stores the state once),
   divided by N. ``statements`` shape: N top-level statements (a snapshot every 16
   operations stores the changed chunks of the state); ``loop`` shape: one ``for``
   statement (journal deltas only; the state is recomputed on resume).
2. **History.** A chat: each step appends a ~300-byte message to ``self.state.chat``
   and says one line to the user (the agent's transcript grows too), for 1,000 steps.
   Bytes are attributed to windows of steps by checkpoint sequence (blobs by their
   timestamps, to the next checkpoint written after them).

Run: ``python benchmarks/bench_bytes.py [--quick]``.
"""

from __future__ import annotations

import argparse
import bisect

import _common as c

KB = 1024


async def state_growth(
    args: argparse.Namespace, work: c.Workdir, backend: c.FilesystemBackend
) -> None:
    n = 32 if args.quick else 160
    totals = [1, 10, 100, 1000] if args.quick else [1, 10, 100, 1000, 10_000]
    config = backend.config()
    rows = []
    for shape in ("statements", "loop"):
        for items in totals:
            state = c.StateShape(f"{items} KB", items)
            c.progress(f"bytes: {shape}, state {items:,} KB")
            full = work.script(c.response(c.SHAPES[shape](n, state), state))
            empty = work.script(c.response("", state))
            _t, r_full = await c.run(work.program, full, config)
            t_empty, r_empty = await c.run(work.program, empty, config)
            u_full = await c.store_usage(config, r_full.execution_id)
            u_empty = await c.store_usage(config, r_empty.execution_id)
            await c.delete_executions(config, [r_full.execution_id, r_empty.execution_id])
            per = (u_full.total - u_empty.total) / n
            ck = (u_full.checkpoint_bytes - u_empty.checkpoint_bytes) / n
            bl = (u_full.blob_bytes - u_empty.blob_bytes) / n
            rows.append(
                [
                    shape,
                    f"{items:,} KB",
                    f"{per:,.0f}",
                    f"{ck:,.0f}",
                    f"{bl:,.0f}",
                    f"{(u_full.writes - u_empty.writes) / n:.2f}",
                    f"{per / state.item_size:.2f}",
                    f"{per / state.total:.4f}",
                    fmt_size(u_empty.total),
                    f"{t_empty:.2f}",
                    f"{encode_ms(state.total):.2f}" if shape == "statements" else "–",
                ]
            )
    c.table(
        [
            "shape",
            "state",
            "bytes/await",
            "checkpoint bytes/await",
            "blob bytes/await",
            "writes/await",
            "÷ change (1 KB)",
            "÷ state",
            "store size of the state once",
            "no-await run (s, one run)",
            "encode ms/snapshot",
        ],
        rows,
        title=f"## Bytes per await as the state grows (1 KB changes per await; N = {n} "
        f"awaits; filesystem store, zstd level 3)",
    )
    c.note(
        "'÷ change' near 1 and flat means proportional to the change; '÷ state' shrinking "
        "10× per row means not proportional to the total. 'store size of the state once' is "
        "what the program with no await writes (first and final snapshots): a system that "
        "stored the whole state at every await would write about that much per await. "
        "'no-await run' is that program's time with durability on (writing the state the "
        "first time: one blob file per ~4 KB chunk). 'encode ms/snapshot' is the CPU time "
        "of ValueCodec.encode over the state alone (median of 5, in-process): bytes stay "
        "proportional to the change, but every snapshot still encodes and hashes the whole "
        "state (divide by snapshot_every = 16 for the cost per await)."
    )


async def history_growth(
    args: argparse.Namespace, work: c.Workdir, backend: c.FilesystemBackend
) -> None:
    steps = 200 if args.quick else 1000
    windows = (
        [(1, 10), (11, 100), (101, 200)]
        if args.quick
        else [(1, 10), (11, 100), (101, 200), (201, 400), (401, 600), (601, 800), (801, 1000)]
    )
    message = 300
    body = "".join(
        f"self.state.chat.append({{'role': 'assistant', 'content': fill({i}, {message})}})\n"
        f"await self.Say('user', 'message {i}')\n"
        for i in range(steps)
    )
    llm = work.script(c.response(body, prelude="self.state.chat = []\n"))
    config = backend.config()
    c.progress(f"bytes: chat history, {steps} steps")
    elapsed, result = await c.run(work.program, llm, config)

    from durably import open_store

    checkpoints = []
    blobs = []
    async with open_store(config=config) as provider:
        async for info in provider.iter_checkpoints(result.execution_id):
            checkpoints.append(
                (info.seq, info.size, info.created_at, info.metadata.get("durably.kind", "?"))
            )
        cursor = None
        while True:
            page = await provider.list_blobs(result.execution_id, cursor=cursor)
            blobs += [(b.created_at, b.size) for b in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    await c.delete_executions(config, [result.execution_id])
    checkpoints.sort()
    # Step k is the k-th delta; any other checkpoint (a snapshot) counts toward the step
    # whose delta came just before it.
    step_of: list[int] = []
    step = 0
    for _seq, _size, _created, kind in checkpoints:
        if kind == "delta":
            step += 1
        step_of.append(max(step, 1))
    times = [created for _seq, _size, created, _kind in checkpoints]
    per_step_ck = [0] * (step + 2)
    per_step_bl = [0] * (step + 2)
    for (_seq, size, _created, _kind), s in zip(checkpoints, step_of, strict=True):
        per_step_ck[s] += size
    for created, size in blobs:
        index = min(bisect.bisect_left(times, created), len(checkpoints) - 1)
        per_step_bl[step_of[index]] += size
    rows = []
    for lo, hi in windows:
        if lo > step:
            break
        hi = min(hi, step)
        count = hi - lo + 1
        ck = sum(per_step_ck[lo : hi + 1]) / count
        bl = sum(per_step_bl[lo : hi + 1]) / count
        history = hi * (message + 40)
        rows.append(
            [
                f"{lo}–{hi}",
                fmt_size(history),
                f"{ck + bl:,.0f}",
                f"{ck:,.0f}",
                f"{bl:,.0f}",
                f"{(ck + bl) / history:.4f}",
            ]
        )
    c.table(
        [
            "steps",
            "chat size at the end of the window (approx.)",
            "bytes/await",
            "checkpoint bytes/await",
            "blob bytes/await",
            "÷ history",
        ],
        rows,
        title=f"## Bytes per await as the history grows ({steps} steps: append a "
        f"{message}-char message to self.state.chat, then Say a line; snapshot "
        "every 16)",
    )
    total = sum(size for *_x, size in blobs) + sum(size for _s, size, _c, _k in checkpoints)
    c.note(
        f"{len(checkpoints)} checkpoints and {len(blobs)} blobs, {fmt_size(total)} in all for "
        f"{step} steps ({total / max(step, 1):,.0f} bytes per step on average); the run took "
        f"{elapsed:.2f} s. The snapshot also stores the agent's transcript (the Say lines) "
        "and the LLM response received so far; all three grow, and each is chunked, so "
        "only the last chunk of each is new in a snapshot."
    )


def encode_ms(total: int) -> float:
    """Median ms of encoding a state of ``total`` bytes of 1 KB strings (one snapshot's
    CPU work on the state; blobs are produced but not stored)."""
    import statistics

    from durably._codec import ValueCodec

    codec = ValueCodec(blob_threshold=16 * KB)
    state = {"blob": [c.fill(-1 - k, KB) for k in range(total // KB)]}
    times = []
    for i in range(5):
        state["blob"][i % len(state["blob"])] = c.fill(i, KB)
        start = c.now()
        codec.encode({"state": state})
        times.append(c.now() - start)
    return statistics.median(times) * 1e3


def fmt_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" or n == int(n) else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GB"


async def bench(args: argparse.Namespace) -> None:
    work = c.Workdir("bytes")
    try:
        backend = c.FilesystemBackend(work.path)
        await state_growth(args, work, backend)
        await history_growth(args, work, backend)
    finally:
        work.cleanup()


if __name__ == "__main__":
    c.main(bench, "durably benchmark: bytes written per checkpoint")
