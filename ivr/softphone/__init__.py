"""Scripted SIP softphones (pjsua2 in a child process, driven from asyncio).

Used by the test suite (agents, callers, survey customers, supervisors) and by the QA
test-call runner. The worker process is `ivr.softphone.worker`; this package's client
side never imports pjsua2.
"""

from ivr.softphone.client import Call, PhoneConfig, Softphone, SoftphoneError

__all__ = ["Call", "PhoneConfig", "Softphone", "SoftphoneError"]
