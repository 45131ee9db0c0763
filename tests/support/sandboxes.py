"""A running sandbox Asterisk for the length of a fixture: installed, booted, then removed.

The suite's own sandbox (tests/conftest.py) and the dedicated instances some tests need
(their own hotline definition, or a whole service to kill) start the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox, SandboxPorts, ensure_root


@contextlib.contextmanager
def running_sandbox(instance: str, definition: HotlineDefinition, ports: SandboxPorts, state_dir: Path,
                    cache_dir: Path, *, prepare: Callable[[Sandbox], None] | None = None) -> Iterator[Sandbox]:
    """Install `definition` into a new instance, run `prepare`, boot it; stop by pid and remove it after."""
    sb = Sandbox(ensure_root(), instance, ports, state_dir=state_dir)
    sb.install(definition, cache_dir=cache_dir / "prompts")
    if prepare is not None:
        prepare(sb)
    sb.start()
    try:
        asyncio.run(sb.wait_booted(timeout=30))
        yield sb
    finally:
        sb.stop()
        sb.remove_dirs()
