"""``durably new-provider NAME``: write the skeleton of a storage provider package.

The skeleton is laid out like the in-repo providers and wired as
``docs/guides/writing-a-provider.md`` describes: a ``pyproject.toml`` registering the
scheme in the ``durably.providers`` entry-point group (and the conformance suite as a
test dependency), ``src/durably_<name>/_provider.py`` with every provider method of
:class:`~durably.storage.CheckpointProvider` in the contract's order, each raising
:class:`NotImplementedError` with a hint and its clauses, and
``tests/test_conformance.py`` running ``durably_conformance.ProviderSuite``. Its
conformance run starts red: every test fails on the method it needs first, with the
clause text under the failure, and turns green as the methods are written.

The provider methods are rendered from :class:`~durably.storage.CheckpointProvider`
itself (names, signatures, order), so the skeleton cannot fall behind the contract.
"""

from __future__ import annotations

import argparse
import inspect
import keyword
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from durably.errors import ConfigError

__all__ = ["HINTS", "add_parser", "provider_methods", "render", "write_skeleton"]

NAME_RE = re.compile(r"[a-z][a-z0-9]{0,31}")
"""A provider name: lower-case letters and digits, starting with a letter. It is the
URL scheme, and names the distribution (``durably-NAME``) and package (``durably_NAME``)."""

HINTS: dict[str, tuple[str, str]] = {
    "_save": (
        "C1, C2, C5, C6, C7, C8, C9, C19, C20",
        "store `stored` under (execution_id, seq) in ONE atomic step that checks `mode` "
        "(raise already_exists / precondition_failed) and, with `lease`, that the lease "
        "is still the current one (raise fenced); return its CheckpointInfo with a new "
        "version",
    ),
    "_load": (
        "C1, C14",
        "return (CheckpointInfo, stored bytes) of (execution_id, seq), or "
        "None if there is no such checkpoint",
    ),
    "_load_latest": ("C3", "return the checkpoint with the highest seq, or None"),
    "_list": (
        "C4",
        "return a Page of CheckpointInfo with seq > after, ascending; the cursor "
        "names the last seq listed (see encode_int_cursor/decode_int_cursor), never an "
        "offset",
    ),
    "_delete": (
        "C9, C10",
        "delete one checkpoint (fenced by `lease` if given); return whether it existed",
    ),
    "_list_executions": (
        "C13",
        "return a Page of ExecutionInfo ascending by id; the cursor is the last id listed",
    ),
    "_delete_execution": (
        "C24",
        "delete every checkpoint, blob and lease of the execution; "
        "a later claim must still get a higher epoch than any before",
    ),
    "_claim": (
        "C15",
        "atomically give the lease to `owner` unless another owner holds a "
        "live one (raise LeaseHeldError); the new epoch is greater than every epoch "
        "ever granted for this id",
    ),
    "_renew": ("C16", "extend the lease if it is still the current one, else raise fenced"),
    "_release": ("C23", "mark the lease released if it is still the current one; else do nothing"),
    "_get_lease": ("C23", "return the current lease record (released ones included), or None"),
    "_put_blob": (
        "C17",
        "store the blob under (execution_id, digest) if absent; return whether it was written",
    ),
    "_get_blob": ("C17", "return the blob's stored bytes, or None"),
    "_has_blob": ("C17", "return whether the blob exists"),
    "_list_blobs": (
        "C25",
        "return a Page of BlobInfo ascending by digest; the cursor is the last digest listed",
    ),
    "_delete_blob": ("C25", "delete the blob; return whether it existed"),
}
"""For every abstract provider method: (its clauses, what to write)."""


def provider_methods() -> list[tuple[str, Callable[..., Any]]]:
    """The abstract provider methods of the contract, in the contract's order."""
    from durably.storage import CheckpointProvider

    abstract = CheckpointProvider.__abstractmethods__
    members: dict[str, Any] = {}
    for klass in reversed(CheckpointProvider.__mro__):  # its bases declare them
        members.update(vars(klass))
    return [
        (name, member)
        for name, member in members.items()
        if name in abstract and name.startswith("_") and callable(member)
    ]


def _signature(name: str, function: Callable[..., Any]) -> str:
    params: list[str] = []
    for param in inspect.signature(function).parameters.values():
        text = param.name
        if param.annotation is not inspect.Parameter.empty:
            text += f": {param.annotation}"
        params.append(text)
    returns = inspect.signature(function).return_annotation
    head = f"    async def {name}("
    one_line = f"{head}{', '.join(params)}) -> {returns}:"
    if len(one_line) <= 99:
        return one_line
    lines = [" " * 7]
    for text in params:  # wrap between parameters, never inside one
        if len(lines[-1]) + len(text) + 2 > 99:
            lines.append(" " * 7)
        lines[-1] += f" {text},"
    return f"{head}\n" + "\n".join(lines) + f"\n    ) -> {returns}:"


def _method(name: str, function: Callable[..., Any]) -> str:
    clauses, hint = HINTS[name]
    summary = (inspect.getdoc(function) or "").split("\n\n", 1)[0].replace("\n", " ")
    chunks = textwrap.wrap(hint, width=80, drop_whitespace=False, break_on_hyphens=False)
    text = "\n".join(f'            "{chunk}"' for chunk in chunks)
    return (
        f"{_signature(name, function)}\n"
        f'        """{summary}"""\n'
        f"        raise NotImplementedError(_todo(\n"
        f'            "{name}", "{clauses}",\n'
        f"{text}))\n"
    )


def render(name: str) -> dict[str, str]:
    """The skeleton's files for provider ``name``: relative path -> text.

    Raises:
        ConfigError: ``name`` is not a lower-case identifier (see :data:`NAME_RE`).
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or keyword.iskeyword(name):
        raise ConfigError(
            f"invalid provider name {name!r}",
            key="new-provider NAME",
            fix="Use lower-case letters and digits, starting with a letter "
            "(it becomes the URL scheme), e.g. 'gizmo'",
        )
    package = f"durably_{name}"
    cls = f"{name.capitalize()}Provider"
    missing = sorted({n for n, _ in provider_methods()} - set(HINTS))
    if missing:  # pragma: no cover - a new abstract method needs a hint here
        raise AssertionError(f"no hint for the provider methods {missing}")
    methods = "\n".join(_method(n, f) for n, f in provider_methods())
    values = {"name": name, "package": package, "cls": cls, "methods": methods}
    return {path.format(**values): text.format(**values) for path, text in _FILES.items()}


def write_skeleton(name: str, directory: Path) -> list[Path]:
    """Write the skeleton of provider ``name`` into ``directory`` (created).

    Returns:
        The files written.

    Raises:
        ConfigError: An invalid name, or ``directory`` exists and is not empty (nothing
            is overwritten).
    """
    files = render(name)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(
            f"{directory} already exists and is not an empty directory",
            key="new-provider --dir",
            fix="Choose another directory with --dir",
        )
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def add_parser(sub: Any) -> None:
    """Register ``new-provider`` on the ``durably`` command's subparsers."""
    parser = sub.add_parser(
        "new-provider",
        help="write a storage provider package skeleton",
        description="Writes durably-NAME/: a pyproject.toml registering the NAME:// scheme, "
        "src/durably_NAME/_provider.py with every provider method raising "
        "NotImplementedError (with a hint and its clauses) and "
        "tests/test_conformance.py. Its conformance run starts red; see "
        "docs/guides/writing-a-provider.md.",
    )
    parser.add_argument("name", metavar="NAME", help="the URL scheme, e.g. gizmo")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write it (default: ./durably-NAME)"
    )
    parser.set_defaults(handler=_new_provider)


async def _new_provider(args: argparse.Namespace) -> int:
    directory = args.dir if args.dir is not None else Path(f"durably-{args.name}")
    written = write_skeleton(args.name, directory)
    for path in written:
        print(path)
    print(
        f"next: cd {directory} && pip install -e '.[test]' && python -m pytest tests -x",
        file=sys.stderr,
    )
    return 0


_PYPROJECT = """\
[project]
name = "durably-{name}"
version = "0.1.0"
description = "A {name}:// storage provider for durably."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["durably>=0.1,<0.2"]

[project.optional-dependencies]
test = ["durably-conformance>=0.1,<0.2", "pytest>=8", "pytest-asyncio>=0.24"]

# The registration: durably.open_store("{name}://...") builds the provider with
# {cls}.from_url(url, options); durably imports it only when such a URL is opened.
[project.entry-points."durably.providers"]
{name} = "{package}:{cls}.from_url"

[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/{package}"]

[tool.pytest.ini_options]
# The conformance suite marks its tests itself (its pytest plugin loads through the
# pytest11 entry point of durably-conformance), so strict mode is enough.
asyncio_mode = "strict"
asyncio_default_fixture_loop_scope = "function"
"""

_README = """\
# durably-{name}

A `{name}://` storage provider for [durably](https://github.com/durably/durably),
generated by `durably new-provider {name}`.

```console
$ pip install -e '.[test]'
$ python -m pytest tests -x       # the conformance suite: red until the provider is written
```

Write the provider methods of `src/{package}/_provider.py` (each one says what it must do
and which clauses of the conformance specification it answers to), then the backdoor
in `tests/test_conformance.py`. Follow docs/guides/writing-a-provider.md.
"""

_INIT = '''\
"""A {name}:// storage provider for durably."""

from {package}._provider import {cls}

__all__ = ["{cls}"]
'''

_PROVIDER = '''\
"""The {name}:// checkpoint provider.

The provider methods below are in the order of durably.storage.CheckpointProvider; each
raises NotImplementedError until it is written. Keep the backend's mechanics (clients,
scripts, SQL, file formats) in modules of their own next to this one, and the contract
methods here. durably's core does the rest: argument checks, envelopes, checksums.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from durably.errors import ConfigError
from durably.storage import (
    BlobInfo,
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    Lease,
    Page,
    WriteMode,
)

__all__ = ["{cls}"]


def _todo(method: str, clauses: str, hint: str) -> str:
    return (f"{cls}.{{method}} is not written yet: {{hint}} "
            f"(conformance clauses {{clauses}}; see docs/guides/writing-a-provider.md)")


class {cls}(CheckpointProvider):
    """Checkpoints, leases and blobs in a {name} store ({name}:// URLs)."""

    scheme: ClassVar[str] = "{name}"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({{Capability.PERSISTENT}})
    """Declare what the store does (see Capability); the suite tests exactly that."""

    def __init__(self, location: str) -> None:
        """Prefer :meth:`from_url`. Performs no I/O."""
        super().__init__()
        self.location = location

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Self:
        """Create a provider for a ``{name}://`` URL and the ``[durability.{name}]`` table.

        Raises:
            ConfigError: Not a {name}:// URL, or an unknown or invalid option.
        """
        if not isinstance(url, str) or not url.startswith("{name}://"):
            raise ConfigError(f"{{url!r}} is not a {name}:// URL", key="durability.store")
        for option in options:
            raise ConfigError(f"unknown option {{option!r}}", key=f"durability.{name}.{{option}}")
        return cls(url[len("{name}://"):])

    def describe(self) -> str:
        """The store, for messages (never a password)."""
        return f"{name}://{{self.location}}"

{methods}'''

_TEST = '''\
"""The durably conformance suite, run against {cls}.

Red until the provider is written: each test fails on the first provider method it
needs, and prints the text of its clause under the failure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from durably_conformance import Backdoor, ProviderSuite

from {package} import {cls}


def _todo(method: str) -> NotImplementedError:
    return NotImplementedError(
        f"{name} backdoor: {{method}} is not written yet (raw access to the store, "
        "bypassing the provider; see section 6 of docs/guides/writing-a-provider.md)")


class {cls}Backdoor:
    """Raw access to the store under ``root``, bypassing the provider."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def read_checkpoint(self, execution_id: str, seq: int) -> bytes:
        raise _todo("read_checkpoint")

    async def write_checkpoint(self, execution_id: str, seq: int, raw: bytes) -> None:
        raise _todo("write_checkpoint")

    async def corrupt_checkpoint(self, execution_id: str, seq: int) -> None:
        raise _todo("corrupt_checkpoint")

    async def truncate_checkpoint(self, execution_id: str, seq: int) -> None:
        raise _todo("truncate_checkpoint")

    async def corrupt_blob(self, execution_id: str, digest: str) -> None:
        raise _todo("corrupt_blob")

    async def locations(self) -> list[str]:
        raise _todo("locations")


class Test{cls}(ProviderSuite):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"{name}://{{tmp_path / 'store'}}"

    @pytest.fixture
    def make_provider(self, store_url: str) -> Callable[[], {cls}]:
        # Each call: a NEW instance on the SAME store, empty when the test starts.
        return lambda: {cls}.from_url(store_url, {{}})

    @pytest.fixture
    def backdoor(self, tmp_path: Path) -> Backdoor:
        return {cls}Backdoor(tmp_path / "store")
'''

_FILES: dict[str, str] = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "src/{package}/__init__.py": _INIT,
    "src/{package}/_provider.py": _PROVIDER,
    "src/{package}/py.typed": "",
    "tests/test_conformance.py": _TEST,
}
