"""Two agents whose exchanges crossed a crash badly before (issue 12's three classes).

* ``Desk.Main`` gets the ``Archive`` agent mid-response and calls its public LLM
  playbook ``Search``, which calls a Python tool in ``while True: try ... except
  ValueError: break``, yields for the next call and returns in its next response.
* Later ``Desk`` sends ``Archive`` a message and waits for its answer
  (``Yield("agent ...")``); ``Archive`` answers from ``ProcessMessages``.
* ``Desk.Main`` ends with ``Return`` of a dict: the program's result.
"""

from durably import Agent, playbook


class Desk(Agent):
    """You answer readers' questions with the help of the archive."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Ask the archive to search for the reader's topic
        - 02:EXE Ask the archive for a summary by message
        - 03:RET the findings"""


class Archive(Agent):
    """You keep the archive and search it."""

    @playbook(llm=True, public=True)
    async def Search(self, topic):
        """- 01:EXE Read every shelf about $topic
        - 02:RET the titles found"""

    @playbook
    async def NextShelf(self) -> str:
        """The next shelf's title; ValueError when there is none left."""
        read = self.state.read if "read" in self.state else 0
        if read >= 3:
            raise ValueError("no more shelves")
        self.state.read = read + 1
        return f"shelf {read + 1}"
