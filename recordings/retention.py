"""Retention (policy by outcome, queue and case; legal hold), purge, reconciliation, disk guard.

Policy text (setting ``recordings_retention``), comma-separated ``key=days``:
``default=90,abandoned=30,queue:complaint=365,case=keep``. Keys are ``default``, an
outcome (``answered``, ``abandoned``, ``queue_timeout``, ...), ``queue:NAME`` or
``case``; a value is a number of days or ``keep``. ``default`` applies only when no
other rule matches; among matching rules the longest period wins, so a complaint-queue
call is never purged sooner because its outcome (say ``abandoned``) is short-lived.
Legal holds always keep; the case library is kept unless the policy says otherwise.

The index is the system of record: purge deletes only files the index names (and
marks their rows ``purged``); reconciliation compares the index with a scan of the
recordings folder and reports files without rows and rows without files.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from recordings.catalog import STATUS_PURGED, RecordingCatalog, RecordingSet
from recordings.index import STATUS_RECORDING, Recording

log = logging.getLogger(__name__)

KEEP = None  # a policy value meaning "never purge"
DEFAULT_POLICY = "default=90,abandoned=30,queue:complaint=365,case=keep"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days to keep, by key; None keeps forever."""

    rules: dict[str, int | None] = field(default_factory=lambda: {"default": 90})

    @classmethod
    def parse(cls, text: str) -> RetentionPolicy:
        rules: dict[str, int | None] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise ValueError(f"retention rule {part!r}: expected key=days")
            if not (key in ("default", "case") or key.startswith("queue:") or key.replace("_", "").isalnum()):
                raise ValueError(f"retention rule {part!r}: unknown key {key!r}")
            if value == "keep":
                rules[key] = KEEP
            elif value.isdigit():
                rules[key] = int(value)
            else:
                raise ValueError(f"retention rule {part!r}: days must be a whole number or 'keep'")
        if "default" not in rules:
            raise ValueError("retention policy needs a default=DAYS rule")
        return cls(rules)

    def keep_days(self, rs: RecordingSet) -> tuple[int | None, str]:
        """How long this call is kept and which rule decided it (None: forever)."""
        if rs.legal_hold:
            return KEEP, "legal hold"
        candidates: list[tuple[str, int | None]] = []
        if rs.outcome and rs.outcome in self.rules:
            candidates.append((rs.outcome, self.rules[rs.outcome]))
        if rs.queue and f"queue:{rs.queue}" in self.rules:
            candidates.append((f"queue:{rs.queue}", self.rules[f"queue:{rs.queue}"]))
        if rs.case_kind and "case" in self.rules:
            candidates.append((f"case ({rs.case_kind})", self.rules["case"]))
        if not candidates:
            candidates.append(("default", self.rules["default"]))
        forever = [name for name, days in candidates if days is KEEP]
        if forever:
            return KEEP, forever[-1]
        name, days = max(candidates, key=lambda c: c[1] or 0)
        return days, name


@dataclass(frozen=True, slots=True)
class PurgeItem:
    linkedid: str
    started_at: datetime
    rule: str
    keep_days: int
    files: tuple[str, ...]
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"linkedid": self.linkedid, "started_at": self.started_at.isoformat(), "rule": self.rule,
                "keep_days": self.keep_days, "files": list(self.files), "bytes": self.bytes}


def purge_plan(catalog: RecordingCatalog, policy: RetentionPolicy, now: datetime) -> list[PurgeItem]:
    """Calls whose retention has run out (ended calls only; a live recording is never touched)."""
    plan: list[PurgeItem] = []
    for rs, legs in catalog.all_sets():
        if rs.stopped_at is None or any(r.status == STATUS_RECORDING for r in legs):
            continue
        days, rule = policy.keep_days(rs)
        if days is KEEP or rs.stopped_at + timedelta(days=days) > now:
            continue
        files = tuple(r.path for r in legs if r.status != STATUS_PURGED)
        plan.append(PurgeItem(rs.linkedid, rs.started_at, rule, days, files,
                              sum(r.size_bytes or 0 for r in legs)))
    return plan


def purge(catalog: RecordingCatalog, plan: list[PurgeItem], now: datetime) -> dict[str, Any]:
    """Delete the planned files (index paths only, resolved inside the root) and mark rows purged."""
    deleted, missing, errors = 0, 0, []
    for item in plan:
        failed = False
        for relative in item.files:
            try:
                path = catalog.index.resolve(relative)
                path.unlink()
                deleted += 1
            except FileNotFoundError:
                missing += 1
            except (OSError, ValueError) as exc:
                failed = True
                errors.append(f"{relative}: {exc}")
        if not failed:  # a file we could not delete keeps its row: nothing is forgotten silently
            catalog.mark_purged(item.linkedid, now)
    return {"calls": len(plan), "files_deleted": deleted, "files_already_gone": missing, "errors": errors}


def reconcile(catalog: RecordingCatalog) -> dict[str, list[str]]:
    """Compare the index with the disk: orphan files (no row) and rows whose file is gone.

    Only ``*.wav`` under the root are considered; symlinks are reported as orphans,
    never followed (Asterisk writes regular files).
    """
    root = Path(os.path.realpath(catalog.index.root))
    indexed = catalog.indexed_paths()
    on_disk: set[str] = set()
    if root.is_dir():
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name.endswith(".wav"):
                    on_disk.add((Path(dirpath) / name).relative_to(root).as_posix())
    orphans = sorted(p for p in on_disk if p not in indexed)
    missing = sorted(p for p, row in indexed.items() if row.status != STATUS_PURGED and p not in on_disk
                     and not _is_live(row))
    return {"files_without_rows": orphans, "rows_without_files": missing}


def _is_live(row: Recording) -> bool:
    # A leg still recording may not have its file flushed yet; only finished legs count as missing.
    return row.status == STATUS_RECORDING and row.stopped_at is None


@dataclass(frozen=True, slots=True)
class DiskState:
    free_bytes: int
    total_bytes: int
    min_free_bytes: int

    @property
    def low(self) -> bool:
        return self.free_bytes < self.min_free_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"free_bytes": self.free_bytes, "total_bytes": self.total_bytes, "min_free_bytes": self.min_free_bytes,
                "free_mb": self.free_bytes // 2**20, "low": self.low}


def disk_state(root: Path, min_free_bytes: int) -> DiskState:
    """Free space where recordings are written (the nearest existing parent of the root)."""
    probe = Path(root)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return DiskState(usage.free, usage.total, min_free_bytes)
