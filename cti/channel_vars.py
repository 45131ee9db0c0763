"""Every channel variable the service and its dialplan share, named once.

The dialplan compiler writes them, the IVR sets them over AGI and the call tracker
reads them back from AMI VarSet events; a typo in one place would silently break
routing or reporting, so all three import these constants.
"""

from typing import Final

PREFIX: Final = "HOTLINE_"

#: IVR outcome: which action the dialplan takes after AGI returns ("queue", "hangup").
ACTION: Final = "HOTLINE_ACTION"
#: The action's target (a queue id for "queue").
TARGET: Final = "HOTLINE_TARGET"
#: The digits the caller chose along the menu path, e.g. "1" or "2>1".
CHOICE: Final = "HOTLINE_CHOICE"
#: Why the IVR routed the call where it did (rule id and reason).
ROUTE_REASON: Final = "HOTLINE_ROUTE_REASON"
#: Recording base name, relative to the recordings root (legs add -mix/-rx/-tx.wav).
RECORDING: Final = "HOTLINE_REC"
#: Test-call tag from the X-Hotline-Test SIP header (filtered to a safe charset).
TEST_TAG: Final = "HOTLINE_TEST"
#: Set by the FastAGI server when a handler failed and the call went to the failsafe.
AGI_FAILED: Final = "HOTLINE_AGI_FAILED"
#: Number the caller dialled (the hotline DID), kept across Goto.
DIALED: Final = "HOTLINE_DIALED"
#: Who placed an outbound call (set on the Originate), e.g. "survey".
ORIGIN: Final = "HOTLINE_ORIGIN"
#: Outbound survey calls (set on the Originate): the survey job and the attempt row id.
SURVEY_JOB: Final = "HOTLINE_SURVEY_JOB"
SURVEY_ATTEMPT: Final = "HOTLINE_SURVEY_ATTEMPT"
#: Set by the survey-call dialplan: survey prompt folder and comment recordings folder, as
#: Asterisk sees them.
SURVEY_SOUNDS: Final = "HOTLINE_SURVEY_SOUNDS"
SURVEY_RECDIR: Final = "HOTLINE_SURVEY_RECDIR"
#: One-time token on a publish smoke call (Local channel Originate), see hotline/smoke.py.
SMOKE: Final = "HOTLINE_SMOKE"

#: SIP header a QA test caller sends so its call is recognised end to end.
TEST_HEADER: Final = "X-Hotline-Test"
#: SIP header the sandbox "carrier" uses to present PSTN callers (see pjsip.conf).
TRUNK_HEADER: Final = "X-Hotline-Trunk"
