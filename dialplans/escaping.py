"""The one escaping point for every value written into generated Asterisk config.

Asterisk's config parser treats `;` as a comment start, trims blanks, and stops a
value at the line end; the dialplan splits application arguments on `,` and expands
`${...}`/`$[...]`. A value from the admin's YAML (a display name, a queue label)
must never change the meaning of the line it lands on, so each position has a
rule, and CR/LF/NUL are refused everywhere.
"""

from __future__ import annotations

import re
from typing import Literal

Position = Literal["identifier", "value", "quoted", "dialplan"]

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,79}$")


class UnsafeValue(ValueError):
    """A value that cannot be written safely at the requested position."""


def escape(value: str | int, position: Position) -> str:
    """Return `value` ready to be written at `position` in an Asterisk config file.

    - identifier: section names, endpoints, queue names, extensions: a strict
      charset, refused otherwise (escaping would change the name).
    - value: a plain `key = value` right-hand side: `;` is escaped, blanks kept.
    - quoted: inside double quotes (caller ID display names): `"` and `\\` escaped too.
    - dialplan: an application argument in extensions.conf: argument separators,
      variable expansion and quotes are escaped so the text stays literal.
    """
    text = str(value)
    if any(c in text for c in "\r\n\x00"):
        raise UnsafeValue(f"line breaks and NUL are not allowed: {text!r}")
    if position == "identifier":
        if not _IDENTIFIER.match(text):
            raise UnsafeValue(f"not a safe identifier: {text!r}")
        return text
    if position == "value":
        if text != text.strip():
            raise UnsafeValue(f"leading or trailing blanks would be lost: {text!r}")
        return text.replace("\\", "\\\\").replace(";", "\\;")
    if position == "quoted":
        return text.replace("\\", "\\\\").replace('"', '\\"').replace(";", "\\;")
    if position == "dialplan":
        out = []
        for ch in text:
            if ch in '\\,;$[]()"|{}^':
                out.append("\\" + ch)
            else:
                out.append(ch)
        return "".join(out)
    raise ValueError(f"unknown position {position!r}")
