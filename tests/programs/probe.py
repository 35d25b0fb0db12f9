"""A program whose LLM code does what the user's one answer says:

* ``ok`` (or any other text) completes;
* ``exit`` ends its process with ``os._exit(1)`` and ``loop`` spins forever -- unless the
  environment variable ``PROBE_FIXED`` is set (the cause was fixed);
* ``big:N`` stores N random bytes in three state variables, ``first``, ``second`` and
  ``third``, one after the other (with ``snapshot_every = 1`` each is in a new snapshot,
  as new blobs);
* ``sysexit`` raises ``SystemExit(0)``, ``baseexc`` a ``BaseException``, ``state5`` sets
  ``self.state = 5``.

A second LLM response (reached only when the first one raised in the program) says
``recovered`` and returns it. Used by ``tests/test_worker_supervised.py``,
``tests/test_size_limits.py`` and ``tests/test_exit_codes.py``.
"""

from durably import Agent, playbook


class Probe(Agent):
    """You do what the user says."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Ask the user what to do, and do it
        - 02:RET what was done"""
