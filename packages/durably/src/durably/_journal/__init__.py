"""The checkpoint document format: the one package that knows its keys.

An execution's checkpoints are documents (encoded by :mod:`durably._codec`, wrapped by
:mod:`durably._envelope`). Each one is written by one agent, or by the execution at its
end, and is one of three types:

* **snapshot** (:class:`SnapshotDoc`): everything about one agent at a quiet point -- its
  op index, phase, bottom frame (:class:`Frame`, whose namespace is stored beside the
  document as the ``locals`` root, the agent's state as the ``state`` root), the LLM
  response its bottom frame is reading (:class:`LLMEntry`), its inbox
  (:class:`Message`), the messages it consumed, its transcript and LLM-call records, the
  request it serves, and how many user inputs were consumed.
* **delta** (:class:`DeltaDoc`): what one agent did since its last checkpoint -- the
  operations it completed (:class:`Entry`), the LLM text that arrived
  (:class:`LLMAppend`), the LLM calls that ended (:class:`LLMRecord`).
* **final** (:class:`FinalDoc`): the execution ended ``completed`` or ``failed``.

The checkpoint manager adds the execution-wide keys to every document (``manifest``:
each agent's latest snapshot; ``next_agent_id``; ``header`` on snapshots and finals).

Keys are short (they are written at every ``await``). Readers take what they know and
default what is absent, so that adding a key never breaks an older checkpoint.

**Versions and migration.** Documents carry no version of their own in format 1; a later
format writes ``"v": N``. A reader accepts documents without ``"v"`` (format 1) up to
:data:`FORMAT` and refuses a newer one with :class:`~durably.errors.UnsupportedFormatError`.
Format 2 adds the frame's ``loop`` (:class:`LoopPosition`: a snapshot taken between two
iterations of a loop, :mod:`durably._loops`), which an older reader must not skip: it
would run the loop again from its start over a namespace already inside it. So only
such a snapshot is written as format 2, and every other document stays format 1, which
older releases still read. Format 3 adds the position's ``start``, of a loop over
``enumerate(sequence, start)``: a format-2 reader would skip it and hand the loop the
sequence's items instead of ``(index, item)`` pairs, so only such a snapshot is format 3.
The rule for a change: a new optional key keeps the format (readers default it); a key
whose meaning changes, or a required new key, bumps :data:`FORMAT` and adds a migration
here, in :func:`upgrade`, from every older format to the new one -- so that checkpoints
written by an older durably can always be resumed.

The package's parts: ``_records`` (the records documents hold: journal entries, LLM
responses and their text, messages, frames, transcript and LLM-call records) and
``_documents`` (the three document types, the format version, and
:class:`RestoredAgent`, what an agent's snapshot and later deltas say). Import everything
from ``durably._journal``; no other module of the core reads or writes the keys.
"""

from durably._journal._documents import (
    FIRST_AGENT_ID,
    FORMAT,
    DeltaDoc,
    FinalDoc,
    RestoredAgent,
    SnapshotDoc,
    doc_type,
    llm_progress,
    upgrade,
)
from durably._journal._records import (
    Entry,
    Frame,
    LLMAppend,
    LLMEntry,
    LLMRecord,
    LoopPosition,
    Message,
    TranscriptItem,
    digest,
    stack_label,
    usage_tokens,
    user_input,
    user_input_number,
)

__all__ = [
    "FIRST_AGENT_ID",
    "FORMAT",
    "DeltaDoc",
    "Entry",
    "FinalDoc",
    "Frame",
    "LLMAppend",
    "LLMEntry",
    "LLMRecord",
    "LoopPosition",
    "Message",
    "RestoredAgent",
    "SnapshotDoc",
    "TranscriptItem",
    "digest",
    "doc_type",
    "llm_progress",
    "stack_label",
    "upgrade",
    "usage_tokens",
    "user_input",
    "user_input_number",
]
