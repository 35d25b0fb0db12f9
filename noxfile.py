"""Every check durably runs, as nox sessions (the venvs are built by uv from uv.lock).

Run everything the way CI does with ``uvx nox``; one session with ``uvx nox -s lint``;
one backend's conformance run with ``uvx nox -s "conformance(backend='s3')"`` or by
tag, ``uvx nox -t s3``.

Each test session installs only the distribution under test, its declared
dependencies and its ``dev`` dependency group (``uv sync --package``), so an import
that a package forgot to declare fails here rather than on a user's machine.
"""

from __future__ import annotations

import glob
import os

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "typecheck", "unit", "compat", "conformance", "e2e", "playbooks"]

# The test sessions start hundreds of Python processes (CLI runs, SIGKILL and resume,
# workers' children). uv installs without bytecode, and where PYTHONDONTWRITEBYTECODE is
# set (as on our CI machines) none is ever written: every one of those processes compiled
# botocore, psycopg, rich and durably from source again, 0.6-1.3 s of CPU each (measured:
# `import aiobotocore.session, durably.cli, durably_s3` 1.5-2.2 s without bytecode, 0.9 s
# with). So site-packages is compiled once at install, and the workspace's own modules are
# cached as they are first imported (``__pycache__/`` is git-ignored).
os.environ["UV_COMPILE_BYTECODE"] = "1"
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

PYTHON = "3.11"
SRC_DIRS = [
    "packages/durably/src",
    "packages/durably-filesystem/src",
    "packages/durably-conformance/src",
    "packages/durably-s3/src",
    "packages/durably-postgres/src",
    "packages/durably-redis/src",
]

#: backend -> (distribution to install, test directory, extra PYTHONPATH)
BACKENDS = {
    "filesystem": ("durably-filesystem", "packages/durably-filesystem/tests", None),
    "s3": ("durably-s3", "packages/durably-s3/tests", None),
    "postgres": ("durably-postgres", "packages/durably-postgres/tests", None),
    "redis": ("durably-redis", "packages/durably-redis/tests", None),
    "memory-example": (
        "durably-conformance",
        "examples/memory_provider/tests",
        "examples/memory_provider/src",
    ),
}


def _sync(session: nox.Session, *args: str) -> None:
    """Install from uv.lock into the session's venv."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


#: pytest-xdist workers per test session: ``DURABLY_TEST_WORKERS`` (a number, or ``auto``:
#: one per core; ``0`` runs in one process). Most of the tests' time is spent in the
#: processes they start and in waiting for them (leases to expire, SIGKILLs, resumes), so
#: the second core halves a session's time; every test keeps its own store, schema, key
#: prefix and moto server, so none sees another's data.
WORKERS = os.environ.get("DURABLY_TEST_WORKERS", "auto")


def _pytest(
    session: nox.Session,
    *args: str,
    pythonpath: str | None = None,
    env: dict[str, str] | None = None,
) -> None:
    env = dict(env or {})
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    # -n first: a `-n 0` after `--` (posargs) wins.
    session.run("python", "-m", "pytest", "-n", WORKERS, *args, *session.posargs, env=env)


@nox.session(python=PYTHON, tags=["lint"])
def lint(session: nox.Session) -> None:
    """ruff over the whole tree: the lint rules, and the formatting (`ruff format --check`)."""
    _sync(session, "--only-group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON, tags=["lint"])
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every distribution's source."""
    _sync(session, "--all-packages", "--group", "typecheck")
    session.run("mypy", *SRC_DIRS)


@nox.session(python=PYTHON, tags=["unit"])
@nox.parametrize("package", ["durably", "durably-conformance"])
def unit(session: nox.Session, package: str) -> None:
    """A distribution's own unit tests, with only that distribution installed."""
    _sync(session, "--package", package)
    _pytest(session, f"packages/{package}/tests")


@nox.session(python=PYTHON)
@nox.parametrize(
    "backend",
    [nox.param(name, tags=[name, "conformance"]) for name in BACKENDS],
)
def conformance(session: nox.Session, backend: str) -> None:
    """The conformance suite (and the provider's own tests) against one backend."""
    package, tests, pythonpath = BACKENDS[backend]
    _sync(session, "--package", package)
    _pytest(session, tests, pythonpath=pythonpath)


@nox.session(python=PYTHON, tags=["e2e"])
def e2e(session: nox.Session) -> None:
    """Cross-package and end-to-end tests (real processes, SIGKILL, packaging)."""
    _sync(session, "--all-packages")
    _pytest(session, "tests")


def _interpreter(version: str) -> str:
    """The interpreter for ``version``: pyenv's when there is one (its ``python3.X`` shim
    fails while pyenv's global version is another one, and uv would try to download one),
    else the plain version for nox to find."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}"))
    return found[-1] if found else version


NEWER_PYTHONS = ["3.12", "3.13"]


@nox.session(tags=["unit"])
@nox.parametrize("python", [_interpreter(v) for v in NEWER_PYTHONS], ids=NEWER_PYTHONS)
def compat(session: nox.Session) -> None:
    """The core's unit tests on the newer Pythons it supports (3.12, 3.13): the standard
    library differs between versions where the core leans on it (the tokenizer's errors,
    for one), so every supported version runs them here, not only in the GitHub matrix."""
    _sync(session, "--package", "durably")
    _pytest(session, "packages/durably/tests")


#: The playbooks releases durably-playbooks supports, newest (the lock's) first: its pin
#: (`packages/durably-playbooks/pyproject.toml`) and `_pb.SUPPORTED` list the same range.
PLAYBOOKS_VERSIONS = ["0.7.4", "0.7.3"]


@nox.session(python=_interpreter("3.12"), tags=["playbooks"])
@nox.parametrize("version", PLAYBOOKS_VERSIONS, ids=PLAYBOOKS_VERSIONS)
def playbooks(session: nox.Session, version: str) -> None:
    """durably-playbooks on Python 3.12 (playbooks requires it), from its own lock, once per
    supported playbooks release (the older ones installed into this session's venv after
    the locked sync, never into a lock): mypy --strict over its source, then its tests
    (real `.pb` programs; a crash after every checkpoint, in process, and SIGKILL chains
    through the command, on the filesystem and -- when a server answers, see
    DURABLY_REQUIRE_POSTGRES and DURABLY_REQUIRE_REDIS -- PostgreSQL and Redis; generated
    programs in both dialects; the
    `durably[playbooks]` extra installed from built wheels). The older releases skip the
    tests marked ``any_release``."""
    venv = {"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}
    session.run_install(
        "uv", "sync", "--locked", "--project", "packages/durably-playbooks", env=venv
    )
    if version != PLAYBOOKS_VERSIONS[0]:
        session.run_install(
            "uv", "pip", "install", "--python", session.virtualenv.location,
            f"playbooks=={version}",
        )  # fmt: skip
    session.run(
        "mypy",
        "--config-file",
        "packages/durably-playbooks/pyproject.toml",
        "packages/durably-playbooks/src",
    )
    # An older release skips the tests of what lies below the Playbooks layer (marker
    # any_release: the other stores, durably's snapshot cadence and retention), which the
    # newest release's session runs: they cannot tell two releases apart.
    older = ("-m", "not any_release") if version != PLAYBOOKS_VERSIONS[0] else ()
    _pytest(
        session,
        "packages/durably-playbooks/tests",
        *older,
        env={"DURABLY_PLAYBOOKS_EXPECTED": version},
    )


@nox.session(python=PYTHON, default=False)
def fuzz(session: nox.Session) -> None:
    """A long fuzz campaign of generated multi-agent programs, every crash point checked.

    ``uvx nox -s fuzz -- --programs 2000 --seed 1`` (see docs/guides/testing-durability.md;
    the default run checks a fixed-seed sample in the e2e session).
    """
    _sync(session, "--package", "durably")
    session.run("python", "tests/fuzz/campaign.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of the default run): prints ratios measured side by side.

    ``uvx nox -s bench`` runs every ``benchmarks/bench_*.py`` at full size (see
    docs/performance.md); ``uvx nox -s bench -- --quick`` is a fast smoke run. Arguments
    after ``--`` are passed to every script.
    """
    _sync(session, "--all-packages")
    # The peers bench_peers.py compares durably with: installed into this session's venv
    # only (after the locked sync), never into the workspace lock.
    session.install(
        "langgraph>=1.0",
        "langgraph-checkpoint-sqlite>=3.0",
        "langgraph-checkpoint-postgres>=3.0",
        "dbos>=2.0",
        "psycopg[binary,pool]>=3.2",
    )
    scripts = (
        sorted(
            name
            for name in os.listdir("benchmarks")
            if name.startswith("bench_") and name.endswith(".py")
        )
        if os.path.isdir("benchmarks")
        else []
    )
    # Every script records its measurements against issue 19's goals in one file; the
    # goals table over all of them is printed last (benchmarks/_goals.py).
    work = session.create_tmp()
    goals = os.path.join(work, "goals.jsonl")
    if os.path.exists(goals):
        os.remove(goals)
    # The stores are made on the project's disk (.nox/bench/tmp), where a user's store
    # would be, not in the system's /tmp: that is often a tmpfs, where a flush costs
    # nothing. Every report's header names the directory, its filesystem and what
    # creating a file there costs.
    env = {"DURABLY_BENCH_GOALS": goals, "TMPDIR": os.path.abspath(work)}
    for script in scripts:
        session.run("python", f"benchmarks/{script}", *session.posargs, env=env)
    session.run("python", "benchmarks/_goals.py", goals)
