"""Atomic config generations: all files of a version appear at once, or none do.

Asterisk reads its config directory file by file on every reload, so writing the
files one after the other (even each one atomically) lets a reload, or a crash,
see a mix of two versions. Instead every version is written complete into its own
generation directory and fsynced; the live path is a symlink that is swapped with
one rename(2). Old generations are never modified, so going back is the same
rename, and the files are then byte for byte the previous ones.

Layout (`link` is what Asterisk's astetcdir names):

    <link>            -> <link.name>.gen/000007   (relative symlink: valid inside a chroot too)
    <link>.gen/000007/extensions.conf ...
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path


class ConfigDirError(RuntimeError):
    """The live config directory could not be written or swapped."""


def generations_dir(link: Path) -> Path:
    return link.with_name(link.name + ".gen")


def current_generation(link: Path) -> Path | None:
    """The generation directory the live link points at (None if not a generation link)."""
    if not link.is_symlink():
        return None
    return (link.parent / os.readlink(link)).resolve()


def write_generation(link: Path, files: Mapping[str, str]) -> Path:
    """Write every file into a new generation directory, fsync it all; nothing live changes."""
    gens = generations_dir(link)
    gens.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name) for p in gens.iterdir() if p.name.isdigit()]
    number = max(numbers, default=0) + 1
    staging = gens / f".staging-{number:06d}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, text in sorted(files.items()):
        if "/" in name or name.startswith("."):
            raise ConfigDirError(f"refusing config file name {name!r}")
        with open(staging / name, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    _fsync_dir(staging)
    final = gens / f"{number:06d}"
    staging.rename(final)
    _fsync_dir(gens)
    return final


def activate(link: Path, generation: Path) -> Path | None:
    """Point `link` at `generation` with one rename; returns the previous generation.

    A real directory at `link` (a sandbox written before generations existed) is
    adopted as a generation first; that one step is not atomic, so it is done only
    by `adopt` before Asterisk starts.
    """
    if link.exists() and not link.is_symlink():
        raise ConfigDirError(f"{link} is a real directory; adopt it before swapping")
    previous = current_generation(link)
    tmp = link.with_name(f".{link.name}.link-{os.getpid()}-{time.monotonic_ns()}")
    tmp.symlink_to(os.path.relpath(generation, link.parent))
    os.replace(tmp, link)
    _fsync_dir(link.parent)
    return previous


def adopt(link: Path) -> None:
    """Turn a plain config directory into generation 000001 behind the link (before boot)."""
    if link.is_symlink() or not link.exists():
        return
    gens = generations_dir(link)
    gens.mkdir(parents=True, exist_ok=True)
    target = gens / "000001"
    if target.exists():
        shutil.rmtree(target)
    link.rename(target)
    activate(link, target)


def install(link: Path, files: Mapping[str, str]) -> Path:
    """Write a generation and make it live at once (adopting a plain directory first)."""
    adopt(link)
    generation = write_generation(link, files)
    activate(link, generation)
    return generation


def fingerprint(directory: Path) -> dict[str, str]:
    """sha256 of every file in a directory (following the live link): proof of 'unchanged'."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


def prune(link: Path, keep: int = 20) -> None:
    """Delete old generations, never the live one."""
    gens = generations_dir(link)
    if not gens.is_dir():
        return
    live = current_generation(link)
    old = sorted((p for p in gens.iterdir() if p.name.isdigit()), key=lambda p: p.name)[:-keep]
    for path in old:
        if path.resolve() != live:
            shutil.rmtree(path, ignore_errors=True)


def remove(link: Path) -> None:
    """Remove the link and every generation (sandbox teardown)."""
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link, ignore_errors=True)
    shutil.rmtree(generations_dir(link), ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
