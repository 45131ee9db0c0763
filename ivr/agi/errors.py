"""AGI errors by origin, and the one place that maps Asterisk's answers to them.

Our misuse (a bad argument, a CR/LF in a value) raises ValueError before anything
is sent. What Asterisk tells us maps to the classes below; IVR code lets AGIHangup
propagate to the FastAGI server, which treats it as a normal end of the call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ivr.agi.protocol import AGIResponse


class AGIError(Exception):
    """Base of AGI errors; carries Asterisk's response when there is one."""

    def __init__(self, message: str, response: AGIResponse | None = None) -> None:
        super().__init__(message)
        self.response = response


class AGIProtocolError(AGIError):
    """Asterisk (or whatever is on the socket) sent garbage or an oversize block."""


class AGIInvalidCommand(AGIError):
    """510: Asterisk does not know the command (our bug, or a module not loaded)."""


class AGIDeadChannel(AGIError):
    """511: the channel is dead (or in an intercept routine); only a few commands work."""


class AGIUsageError(AGIError):
    """520: wrong arguments (our bug); `usage` holds Asterisk's usage text."""

    @property
    def usage(self) -> str:
        return "" if self.response is None or self.response.data is None else self.response.data


class AGIResultError(AGIError):
    """200 with a negative result: the command failed, usually because the caller hung up.

    EXEC also answers result=-2 when the application does not exist.
    """


class AGIHangup(AGIError):
    """The caller hung up (HANGUP notice, or Asterisk closed the socket). Let it propagate."""


class AGITimeout(AGIError, TimeoutError):
    """Asterisk did not answer a command in time; the session can no longer be trusted."""


def check_response(resp: AGIResponse) -> AGIResponse:
    """Return a successful response unchanged; raise the matching AGIError otherwise."""
    if resp.code == 200:
        value = resp.result_int
        if value is not None and value < 0:
            raise AGIResultError(f"AGI command failed: {resp.text}", resp)
        return resp
    if resp.code == 510:
        raise AGIInvalidCommand(resp.text, resp)
    if resp.code == 511:
        raise AGIDeadChannel(resp.text, resp)
    if resp.code == 520:
        raise AGIUsageError(resp.text, resp)
    raise AGIProtocolError(f"unexpected AGI response code: {resp.text[:200]!r}", resp)
