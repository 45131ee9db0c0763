"""AGI errors, and the one place that maps Asterisk's result codes to them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ivr.agi.protocol import AGIResponse


class AGIError(Exception):
    """Base of AGI errors."""


class AGIProtocolError(AGIError):
    """Asterisk (or something else on the socket) sent garbage or an oversize block."""


class AGIInvalidCommand(AGIError):
    """510: Asterisk does not know the command (our bug)."""


class AGIDeadChannel(AGIError):
    """511: the channel is dead; only a few commands are allowed now."""


class AGIUsageError(AGIError):
    """520: wrong arguments (our bug); carries Asterisk's usage text."""


class AGIResultError(AGIError):
    """200 result=-1: the command failed, usually because the caller hung up."""


class AGIHangup(AGIError):
    """The caller hung up (HANGUP notice or EOF). IVR code lets this propagate."""


def check_response(resp: AGIResponse) -> AGIResponse:
    if resp.code == 200:
        if resp.result == "-1":
            raise AGIResultError(resp.text)
        return resp
    if resp.code == 510:
        raise AGIInvalidCommand(resp.text)
    if resp.code == 511:
        raise AGIDeadChannel(resp.text)
    if resp.code == 520:
        raise AGIUsageError(resp.text)
    raise AGIProtocolError(f"unexpected AGI response: {resp.text!r}")
