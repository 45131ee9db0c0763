"""Service configuration: defaults < YAML file < environment, parsed once, typed.

Secrets (the AMI secret, API tokens) come from the environment or the sandbox's
generated state file, never from the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from dialplans.definition import DEFAULT_PATH


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("var")
    database_url: str = ""  # empty: SQLite file in data_dir
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    #: Asterisk's PJSIP port on ami_host (QA test calls dial the hotline there).
    sip_port: int = 5060
    ami_username: str = "hotline"
    ami_secret: str = ""
    definition: Path = DEFAULT_PATH
    recordings_dir: Path = Path("var/recordings")  # where Asterisk's recordings are visible to us
    default_region: str = "CN"
    #: Asterisk's log directory as the service sees it (queue_log, cdr-custom/) for `report import`.
    asterisk_log_dir: str = ""
    #: Report and piece-rate rules (YAML: {reports: {...}, piece_rate: {...}}); empty: defaults.
    report_rules: str = ""
    # Recordings (see recordings/): QA flag threshold, free-disk watermark, retention policy.
    recordings_dead_air_seconds: int = 10
    recordings_min_free_mb: int = 2048
    recordings_retention: str = "default=90,abandoned=30,queue:complaint=365,case=keep"
    recordings_analysis_workers: int = 1
    recordings_disk_check_seconds: int = 60
    #: 1: the service runs the survey dialer itself (else run `hotline survey dial` beside it).
    survey_dialer: int = 0
    #: JSON file {number: dial string} overriding campaign dial templates for the in-service
    #: dialer (like `hotline survey dial --routes`; test phones on their own ports).
    survey_routes: str = ""
    #: "uvloop" (the default; asyncio's loop when uvloop is missing) or "asyncio": the
    #: service's event loop (ivr.agi.eventloop; uvloop costs FastAGI about a third less CPU).
    event_loop: str = "uvloop"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "hotline.sqlite3"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"


_ENV = {f.name: f"HOTLINE_{f.name.upper()}" for f in fields(Settings)}


def load_settings(file: Path | None = None, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from defaults, then `file` (YAML), then HOTLINE_* variables."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    file = file or (Path(env["HOTLINE_CONFIG"]) if env.get("HOTLINE_CONFIG") else None)
    if file is not None:
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"cannot read settings file {file}: {exc}") from None
        if not isinstance(raw, dict):
            raise SettingsError(f"settings file {file} must be a mapping")
        values.update(raw)
    for name, var in _ENV.items():
        if var in env:
            values[name] = env[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings()
    typed: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name not in values:
            continue
        value = values.pop(f.name)
        default = getattr(settings, f.name)
        try:
            if isinstance(default, Path):
                typed[f.name] = Path(value)
            elif isinstance(default, int):
                typed[f.name] = int(value)
            else:
                typed[f.name] = str(value)
        except (TypeError, ValueError):
            raise SettingsError(f"setting {f.name} ({_ENV[f.name]}): {value!r} is not valid") from None
    if values:
        raise SettingsError(f"unknown settings: {', '.join(sorted(values))}")
    return replace(settings, **typed)
