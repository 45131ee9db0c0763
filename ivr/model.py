"""The IVR flow as data: node dataclasses the engine runs and the compiler reads.

Kept free of I/O and of YAML so that `dialplans/` (which loads and validates the
admin-edited definition) and `ivr/` (which runs it over FastAGI) share one model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DTMF_DIGITS = "0123456789*#"


@dataclass(frozen=True, slots=True)
class Play:
    """Play prompts, then continue at `next`."""

    id: str
    prompts: tuple[str, ...]
    next: str


@dataclass(frozen=True, slots=True)
class Menu:
    """Play prompts and branch on one DTMF digit.

    A digit pressed during a prompt interrupts it. After `retries` invalid or
    missing inputs the caller goes to `on_exhausted` (usually the operator), so a
    menu can never trap a caller.
    """

    id: str
    prompts: tuple[str, ...]
    choices: Mapping[str, str]
    timeout: float = 5.0
    retries: int = 2
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None
    on_exhausted: str = "operator"


@dataclass(frozen=True, slots=True)
class QueueRoute:
    """Hand the call to an Asterisk queue (the dialplan runs Queue())."""

    id: str
    queue: str
    prompts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Hangup:
    """Play prompts (e.g. a goodbye) and end the call."""

    id: str
    prompts: tuple[str, ...] = ()


Node = Play | Menu | QueueRoute | Hangup


@dataclass(frozen=True, slots=True)
class Flow:
    """A runnable IVR: nodes by id, the start node, and prompt files.

    `prompts` maps a prompt id to the sound file as Asterisk sees it, without
    extension (Asterisk picks the format), e.g. `/var/lib/hotline/sounds/zh/welcome`.
    """

    start: str
    nodes: Mapping[str, Node]
    prompts: Mapping[str, str] = field(default_factory=dict)

    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def sound(self, prompt_id: str) -> str:
        return self.prompts[prompt_id]
