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
    ami_username: str = "hotline"
    ami_secret: str = ""
    definition: Path = DEFAULT_PATH
    recordings_dir: Path = Path("var/recordings")  # where Asterisk's recordings are visible to us
    default_region: str = "CN"

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
