"""CURVE keys and group files, read as the Rust binaries read them.

- Key files are written by ``orderly-broker keygen --out PREFIX`` (or the
  worker's or producer's): ``PREFIX.key`` holds ``public-key Z85`` and
  ``secret-key Z85`` lines (mode 0600), ``PREFIX.pub`` the public key
  alone (security/src/keys.rs).
- A group file is TOML with one ``[[member]]`` table per broker: ``id``,
  ``intake``, ``fanout``, ``control``, ``peer``, ``admin`` and optionally
  ``public_key`` (docs/REPLICATION.md).
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass

import zmq
from zmq.utils import z85

from .errors import ConfigError

#: Characters of a Z85-encoded CURVE key (32 bytes).
KEY_Z85_CHARS = 40
#: Files larger than this are not key files.
KEY_FILE_BYTES_MAX = 4096
#: Members a group may have.
MEMBERS_MAX = 7
#: Group files larger than this are refused (a handful of members).
GROUP_FILE_BYTES_MAX = 64 * 1024


def _z85_key(text: str) -> bytes | None:
    text = text.strip()
    if len(text) != KEY_Z85_CHARS:
        return None
    try:
        key = z85.decode(text)
    except Exception:
        return None
    return key if len(key) == 32 else None


def _read_small(path: str, what: str) -> str:
    try:
        size = os.stat(path).st_size
        if size > KEY_FILE_BYTES_MAX:
            raise ConfigError(f"{what} {path}: too large for a key file ({size} bytes)")
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None


def load_public_key(text_or_path: str) -> bytes:
    """A public key given as its 40 Z85 characters or as a file holding it
    (e.g. ``broker.pub``); 32 raw bytes."""
    key = _z85_key(text_or_path)
    if key is not None:
        return key
    if not os.path.exists(text_or_path):
        raise ConfigError(f"{text_or_path!r} is not a Z85 CURVE key (40 characters) nor a readable key file")
    text = _read_small(text_or_path, "public key file")
    line = next((l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")), "")
    key = _z85_key(line)
    if key is None:
        raise ConfigError(f"{text_or_path}: no Z85 public key (write the 40 characters of `keygen`'s PREFIX.pub)")
    return key


def load_secret_file(path: str) -> tuple[bytes, bytes]:
    """(public, secret) from a ``PREFIX.key`` file; refuses a file that
    group or others may read, as the Rust binaries do."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as e:
        raise ConfigError(f"cannot read secret key file {path}: {e.strerror or e}") from None
    if mode & 0o077:
        raise ConfigError(f"secret key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")
    text = _read_small(path, "secret key file")

    def field(name: str) -> bytes:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(name):
                key = _z85_key(line[len(name):])
                if key is None:
                    raise ConfigError(f"{path}: `{name}` is not a Z85 key")
                return key
        raise ConfigError(f"{path}: no `{name}` line (is it a PREFIX.key written by `orderly-* keygen`?)")

    return field("public-key"), field("secret-key")


class Curve:
    """CURVE client keys: our key pair (`secret_key_file`, a ``PREFIX.key``
    of ``keygen``) and the broker's public key (`server_public_key`: Z85
    text or a ``.pub`` file). In a group, a member's ``public_key`` in the
    group file wins over `server_public_key`, which may then be None."""

    def __init__(self, secret_key_file: str, server_public_key: str | None = None):
        self.public, self.secret = load_secret_file(os.fspath(secret_key_file))
        self.server_public = None if server_public_key is None else load_public_key(server_public_key)

    def __repr__(self) -> str:  # never print the secret key
        return f"Curve(public={z85.encode(self.public).decode()})"

    def for_member(self, member: "Member | None") -> bytes:
        """The server key to use towards `member` (None: a single broker)."""
        if member is not None and member.public_key is not None:
            return load_public_key(member.public_key)
        if self.server_public is None:
            if member is None:
                raise ConfigError("Curve needs server_public_key (the broker's PREFIX.pub or its 40 Z85 characters)")
            raise ConfigError(
                f"Curve needs the brokers' public keys: give server_public_key, or a public_key for every member"
                f" in the group file (member {member.id} has none)"
            )
        return self.server_public

    def apply(self, socket: zmq.Socket, member: "Member | None" = None) -> None:
        """Makes `socket` a CURVE client; call before connect."""
        socket.curve_serverkey = self.for_member(member)
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret


@dataclass(frozen=True)
class Member:
    """One broker of a group, as clients see it."""

    id: int
    intake: str
    fanout: str
    control: str
    public_key: str | None = None


def load_group(path) -> list[Member]:
    """The members of a group file (``[[member]]`` tables), checked."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read(GROUP_FILE_BYTES_MAX + 1)
    except OSError as e:
        raise ConfigError(f"cannot read group file {path}: {e.strerror or e}") from None
    if len(data) > GROUP_FILE_BYTES_MAX:
        raise ConfigError(f"group file {path} is larger than {GROUP_FILE_BYTES_MAX} bytes: is it a group file?")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"group file {path} is not valid TOML: {e}") from None
    tables = doc.get("member")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(
            f"group file {path} has no [[member]] tables (each member is a [[member]] table with id, intake,"
            " fanout, control, peer and admin)"
        )
    if len(tables) > MEMBERS_MAX:
        raise ConfigError(f"group file {path} has {len(tables)} members; a group has 1 to {MEMBERS_MAX}")
    members, seen = [], set()
    for n, table in enumerate(tables, 1):
        where = f"group file {path}, member table {n}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} is not a table")
        member_id = table.get("id")
        if type(member_id) is not int or member_id < 1:
            raise ConfigError(f"{where}: `id` must be an integer from 1 (got {member_id!r})")
        if member_id in seen:
            raise ConfigError(f"{where}: member id {member_id} is listed twice")
        seen.add(member_id)
        for key in ("intake", "fanout", "control"):
            value = table.get(key)
            if not isinstance(value, str) or "://" not in value:
                raise ConfigError(f"{where}: `{key}` must be an endpoint like \"tcp://10.0.0.1:5570\" (got {value!r})")
        public_key = table.get("public_key")
        if public_key is not None and not isinstance(public_key, str):
            raise ConfigError(f"{where}: `public_key` must be a string (Z85 key or a .pub file)")
        members.append(Member(member_id, table["intake"], table["fanout"], table["control"], public_key))
    return members


class Leadership:
    """Follows the members' heartbeats: the announcement with the highest
    term whose sender and leader are members wins (a follower's counts),
    as common/src/members.rs does."""

    def __init__(self, members: list[Member]):
        self.ids = {m.id for m in members}
        self.leader: int | None = None
        self.term: int | None = None

    def observe(self, heartbeat: dict):
        """(leader, term) when the heartbeat announces a newer one, else None."""
        member, leader, term = heartbeat["member"], heartbeat["leader"], heartbeat["term"]
        if member is None or leader is None or member not in self.ids or leader not in self.ids:
            return None
        if self.term is not None and term <= self.term:
            return None
        self.leader, self.term = leader, term
        return leader, term
