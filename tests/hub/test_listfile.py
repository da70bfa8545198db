"""Key and token lists in files (hub/listfile.py): what counts as an entry and who holds it."""

from __future__ import annotations

import zmq

from threatseer.hub.transport import AllowList


def test_allow_list_entries_and_holders_with_hashes_inside_keys(tmp_path) -> None:
    """Z85 has '#' in its alphabet: the holder is the comment after the key, not whatever
    follows the first '#' of the line."""
    hashed = plain = ""
    while not (hashed and plain):
        pub = zmq.curve_keypair()[0].decode()
        if "#" in pub:
            hashed = pub
        else:
            plain = pub
    d = tmp_path / "allow"
    d.mkdir()
    (d / "web1.pub").write_text(f"# a comment line\n{plain}\n")
    (d / "ops").write_text(f"{hashed}  # db-7 # of ops\nnot-a-key  # x\n")
    (d / ".hidden").write_text(f"{zmq.curve_keypair()[0].decode()}\n")
    allow = AllowList(str(d))
    assert allow.names == {plain.encode(): "web1.pub", hashed.encode(): "db-7 # of ops"}
    assert allow.errors == 1  # the bad line, logged with file:line and skipped
