"""Automated post-service callback surveys (issue 6).

A trigger (service order closed, hotline call ended) creates a survey job; the
dialer (`dialer.py`) checks the rules (`rules.py`: calling window in the customer's
zone, holidays, suppression, retries, one survey per period), writes an attempt row
and only then sends an AMI Originate (through `cti.originate.Originator`, which also
refuses numbers on the shared do-not-call list, `cti.suppression`); the answered call runs the survey flow
(`flow.py`) over FastAGI, which stores each answer the moment it is entered.
Everything durable lives in `models.py` tables on the shared metadata.
"""
