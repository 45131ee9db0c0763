"""RTP bound to the media address, and the sandbox root resolving this host's name.

Asterisk with RTP on 0.0.0.0 looked its own host name up on every call; inside the
sandbox root that name is unknown and each lookup stalled about 5 s under load.
"""

from __future__ import annotations

from pathlib import Path

from dialplans.compiler import AsteriskSettings, compile_hotline
from dialplans.definition import DEFAULT_PATH, load_definition
from hotline.sandbox import ensure_hosts_entry


def _endpoint_blocks(pjsip: str) -> list[str]:
    return [block for block in pjsip.split("\n\n") if "type = endpoint" in block]


def test_rtp_binds_to_the_media_address_when_one_is_set() -> None:
    defn = load_definition(DEFAULT_PATH)
    pinned = compile_hotline(defn, AsteriskSettings(ami_secret="x", agent_passwords={a: "pw" for a in defn.agents},
                                                    media_address="127.0.0.1")).files["pjsip.conf"]
    blocks = _endpoint_blocks(pinned)
    assert blocks and all("media_address = 127.0.0.1" in b and "bind_rtp_to_media_address = yes" in b
                          for b in blocks)
    free = compile_hotline(defn, AsteriskSettings(ami_secret="x", agent_passwords={a: "pw" for a in defn.agents}))
    assert "bind_rtp_to_media_address" not in free.files["pjsip.conf"]


def test_hosts_entry_is_added_once(tmp_path: Path) -> None:
    hosts = tmp_path / "etc" / "hosts"
    hosts.parent.mkdir()
    hosts.write_text("127.0.0.1\tlocalhost\n# 127.0.1.1 myhost (a comment does not count)\n")
    ensure_hosts_entry(tmp_path, "myhost")
    ensure_hosts_entry(tmp_path, "myhost")
    lines = hosts.read_text().splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert [line for line in lines if not line.startswith("#") and "myhost" in line] == ["127.0.1.1\tmyhost"]


def test_hosts_file_is_created_when_missing(tmp_path: Path) -> None:
    ensure_hosts_entry(tmp_path, "otherhost")
    assert (tmp_path / "etc" / "hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\totherhost\n"
