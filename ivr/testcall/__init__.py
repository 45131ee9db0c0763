"""QA test calls ("mystery shopper"): scenarios, a runner that dials the hotline with a
softphone in its own process, an offline prompt check on what the caller heard, a
generator that covers every menu path, results storage, schedules and REST.

Only `cti` is imported from other packages (DESIGN.md section 2); the composition
layer (`hotline/`) hands in the expected prompt audio and the live call events.
"""
