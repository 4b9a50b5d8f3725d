"""The operator's directory: subscribers, trusted peers and shared lines in the database.

``scaserver subscriber|trusted|line ...`` are thin argparse front ends over the
functions here, which read and write through the store's repositories.  Every
change moves ``directory_generation`` in its transaction; a running server polls it
(``directory.poll_interval``) and reloads the directory when it moved.

Passwords are never stored: a subscriber row holds the digest HA1 values
(RFC 7616 section 3.4.2: ``H(username:realm:password)`` for MD5, SHA-256 and
SHA-512/256), which is what digest verification needs and all it needs.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TextIO

import attrs
from twisted.logger import Logger

from scaserver.sca.line import LineAlias, SharedLine, canonical_aor
from scaserver.sca.settings import ConfiguredAlias, ConfiguredLine
from scaserver.sip.digest import Algorithm, CredentialLookup, Credentials
from scaserver.sip.domains import DomainPolicy
from scaserver.sip.message import Transport
from scaserver.sip.trust import TrustedPeer
from scaserver.sip.uri import SipUri, parse_uri
from scaserver.store.sql import SqlStore

log = Logger(namespace="scaserver.directory")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class DirectoryError(Exception):
    """An operator request that cannot be carried out (unknown entry, bad value)."""


def split_user(text: str) -> tuple[str, str]:
    """``user@domain`` (or ``sip:user@domain``) -> (user, lower-case domain)."""
    value = text.removeprefix("sip:")
    user, at, domain = value.rpartition("@")
    if not at or not user or not domain:
        raise DirectoryError(f"{text!r}: expected USER@DOMAIN")
    return user, domain.lower()


def line_aor(text: str) -> str:
    aor = canonical_aor(text if text.startswith(("sip:", "sips:")) else f"sip:{text}")
    if aor is None:
        raise DirectoryError(f"{text!r}: expected a SIP AoR such as sip:2001@example.com")
    return aor


# ------------------------------------------------------------------ subscribers


def digest_policy(text: str | None) -> tuple[Algorithm, ...]:
    """``--algorithms``: ``SHA-256``, ``SHA-256,MD5``...; ``default`` or none is the server's."""
    if text is None or text.strip().lower() in ("", "default"):
        return ()
    found: list[Algorithm] = []
    for token in text.split(","):
        algorithm = Algorithm.from_token(token)
        if algorithm is None or not token.strip():
            choices = ", ".join(a.value for a in Algorithm)
            raise DirectoryError(f"{token.strip()!r}: expected a list of {choices}, or default")
        if algorithm not in found:
            found.append(algorithm)
    return tuple(found)


def add_subscriber(
    store: SqlStore,
    user_at_domain: str,
    password: str,
    *,
    realm: str = "",
    algorithms: tuple[Algorithm, ...] = (),
) -> Credentials:
    """Store the HA1 values of ``user@domain``: hashed for the realm the server challenges it
    in, the domain (or ``realm``, when ``auth.realm`` forces one)."""
    user, domain = split_user(user_at_domain)
    if not password:
        raise DirectoryError("the password must not be empty")
    credentials = Credentials.from_password(user, realm or domain, password, algorithms=algorithms)
    store.subscribers.upsert([credentials])
    return credentials


def remove_subscriber(store: SqlStore, user_at_domain: str) -> None:
    user, domain = split_user(user_at_domain)
    if not any(c.username == user and c.realm == domain for c in store.subscribers.load_all()):
        raise DirectoryError(f"no subscriber {user}@{domain}")
    store.subscribers.delete([(user, domain)])


# ------------------------------------------------------------------ trusted peers


def add_trusted(store: SqlStore, cidr: str, transport: str | None, tag: str) -> TrustedPeer:
    try:
        peer = TrustedPeer(cidr, Transport(transport.upper()) if transport else None, tag)
    except ValueError as error:
        raise DirectoryError(f"{cidr!r}: {error}") from None
    store.trusted_peers.upsert([peer])
    return peer


def remove_trusted(store: SqlStore, cidr: str, transport: str | None) -> None:
    wanted = trusted_key(cidr, transport)
    if not any((str(p.cidr), p.transport) == wanted for p in store.trusted_peers.load_all()):
        raise DirectoryError(f"no trusted peer {cidr}" + (f" ({transport})" if transport else ""))
    store.trusted_peers.delete([wanted])


def trusted_key(cidr: str, transport: str | None) -> tuple[str, Transport | None]:
    try:
        peer = TrustedPeer(cidr, Transport(transport.upper()) if transport else None)
    except ValueError as error:
        raise DirectoryError(f"{cidr!r}: {error}") from None
    return str(peer.cidr), peer.transport


# ------------------------------------------------------------------ shared lines


def find_line(store: SqlStore, aor: str) -> SharedLine:
    for line in store.lines.load_all():
        if line.aor == aor:
            return line
    raise DirectoryError(f"no shared line {aor}")


def add_line(
    store: SqlStore, aor_text: str, appearances: int, members: Iterable[str], *, push_members: bool = False
) -> SharedLine:
    if appearances < 1:
        raise DirectoryError("a shared line needs at least one appearance")
    line = SharedLine(line_aor(aor_text), appearances, frozenset(members), push_members)
    store.lines.upsert([line])
    return line


def remove_line(store: SqlStore, aor_text: str) -> None:
    line = find_line(store, line_aor(aor_text))
    store.lines.delete([line.aor])


def change_members(store: SqlStore, aor_text: str, add: Iterable[str], remove: Iterable[str]) -> SharedLine:
    line = find_line(store, line_aor(aor_text))
    members = (set(line.members) | set(add)) - set(remove)
    changed = attrs.evolve(line, members=frozenset(members))
    store.lines.upsert([changed])
    return changed


def add_alias(store: SqlStore, alias_text: str, line_text: str) -> LineAlias:
    """``alias`` becomes another name of the shared line (sca.md Q26), replacing what it named
    before.  The line is in the database; an alias is not a line itself."""
    alias, line = line_aor(alias_text), line_aor(line_text)
    if alias == line:
        raise DirectoryError(f"{alias} cannot be an alias of itself")
    lines = {item.aor for item in store.lines.load_all()}
    if line not in lines:
        raise DirectoryError(f"no shared line {line}")
    if alias in lines:
        raise DirectoryError(f"{alias} is a shared line")
    value = LineAlias(alias, line)
    store.line_aliases.upsert([value])
    return value


def remove_alias(store: SqlStore, alias_text: str) -> None:
    alias = line_aor(alias_text)
    if all(item.alias != alias for item in store.line_aliases.load_all()):
        raise DirectoryError(f"no alias {alias}")
    store.line_aliases.delete([alias])


# ------------------------------------------------------------------ command line


def add_subparsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``subscriber``, ``trusted`` and ``line`` commands, each with ``--config``/``--db``."""

    def with_db(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--config", metavar="FILE")
        parser.add_argument("--db", metavar="URL", help="database URL (default: [database] url)")
        return parser

    subscriber = commands.add_parser("subscriber", help="digest subscribers").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    added = with_db(subscriber.add_parser("add", help="add or change a subscriber"))
    added.add_argument("user", metavar="USER@DOMAIN")
    added.add_argument("--password", help="the password (default: asked on the terminal, or one stdin line)")
    added.add_argument(
        "--algorithms",
        metavar="LIST",
        help="digest algorithms offered to and accepted from this subscriber, most preferred first"
        " (SHA-256 only: SHA-256; both: SHA-256,MD5); default: the server's auth.algorithms",
    )
    with_db(subscriber.add_parser("rm", help="remove a subscriber")).add_argument(
        "user", metavar="USER@DOMAIN"
    )
    with_db(subscriber.add_parser("list", help="list subscribers"))

    trusted = commands.add_parser("trusted", help="peers served without authentication").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    added = with_db(trusted.add_parser("add", help="trust a source address or network"))
    added.add_argument("cidr", metavar="CIDR")
    added.add_argument("--transport", choices=["udp", "tcp", "tls"])
    added.add_argument("--tag", default="", help="a name for the peer (PBX, gateway...)")
    removed = with_db(trusted.add_parser("rm", help="stop trusting a network"))
    removed.add_argument("cidr", metavar="CIDR")
    removed.add_argument("--transport", choices=["udp", "tcp", "tls"])
    with_db(trusted.add_parser("list", help="list trusted peers"))

    line = commands.add_parser("line", help="shared (SCA) lines").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    added = with_db(line.add_parser("add", help="add or change a shared line"))
    added.add_argument("aor", metavar="AOR")
    added.add_argument("--appearances", type=int, default=2)
    added.add_argument("--member", action="append", default=[], help="a member (digest user or SIP URI)")
    added.add_argument(
        "--push-members",
        action="store_true",
        help="calls to the line also wake the members' mobiles by push (push-and-parking.md 6.11)",
    )
    with_db(line.add_parser("rm", help="remove a shared line")).add_argument("aor", metavar="AOR")
    with_db(line.add_parser("list", help="list shared lines"))
    members = with_db(line.add_parser("members", help="show or change the members of a line"))
    members.add_argument("aor", metavar="AOR")
    members.add_argument("--add", action="append", default=[], metavar="MEMBER")
    members.add_argument("--remove", action="append", default=[], metavar="MEMBER")
    alias = line.add_parser("alias", help="other names (numbers, URIs) of shared lines").add_subparsers(
        dest="alias_action", metavar="ACTION", required=True
    )
    added = with_db(alias.add_parser("add", help="add or change an alias of a line"))
    added.add_argument("alias", metavar="ALIAS")
    added.add_argument("line", metavar="LINE")
    with_db(alias.add_parser("rm", help="remove an alias")).add_argument("alias", metavar="ALIAS")
    with_db(alias.add_parser("list", help="list aliases"))


def _password(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.password is not None:
        return str(args.password)
    if stdin.isatty():
        return getpass.getpass("password: ")
    return stdin.readline().rstrip("\r\n")


def _subscriber(store: SqlStore, args: argparse.Namespace, out: TextIO, stdin: TextIO) -> None:
    match args.action:
        case "add":
            policy = digest_policy(args.algorithms)
            realm = getattr(args, "forced_realm", "")
            credentials = add_subscriber(
                store, args.user, _password(args, stdin), realm=realm, algorithms=policy
            )
            offered = ", ".join(a.value for a in policy) if policy else "the server's auth.algorithms"
            print(
                f"subscriber {args.user.removeprefix('sip:')} saved: HA1 hashed for realm"
                f" {credentials.realm!r}; digest algorithms: {offered}",
                file=out,
            )
        case "rm":
            remove_subscriber(store, args.user)
            print(f"subscriber {args.user} removed", file=out)
        case _:
            for credentials in sorted(store.subscribers.load_all(), key=lambda c: (c.realm, c.username)):
                print(f"{credentials.username}@{credentials.realm}", file=out)


def _trusted(store: SqlStore, args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> None:
    match args.action:
        case "add":
            peer = add_trusted(store, args.cidr, args.transport, args.tag)
            print(f"trusted {peer.cidr} saved", file=out)
        case "rm":
            remove_trusted(store, args.cidr, args.transport)
            print(f"trusted {args.cidr} removed", file=out)
        case _:
            for peer in store.trusted_peers.load_all():
                transport = peer.transport.value.lower() if peer.transport else "any"
                print(f"{peer.cidr}\t{transport}\t{peer.tag}", file=out)


def _line(store: SqlStore, args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> None:
    match args.action:
        case "add":
            line = add_line(store, args.aor, args.appearances, args.member, push_members=args.push_members)
            pushed = ", waking members' mobiles" if line.push_members else ""
            print(f"line {line.aor} saved with {line.appearances} appearances{pushed}", file=out)
        case "rm":
            remove_line(store, args.aor)
            print(f"line {line_aor(args.aor)} removed", file=out)
        case "members":
            line = change_members(store, args.aor, args.add, args.remove)
            for member in sorted(line.members):
                print(member, file=out)
        case "alias":
            _alias(store, args, out)
        case _:
            names: dict[str, list[str]] = {}
            for alias in store.line_aliases.load_all():
                names.setdefault(alias.line, []).append(alias.alias)
            for line in sorted(store.lines.load_all(), key=lambda item: item.aor):
                push = "push-members" if line.push_members else "-"
                aliases = ",".join(sorted(names.get(line.aor, ()))) or "-"
                print(
                    f"{line.aor}\t{line.appearances}\t{','.join(sorted(line.members))}\t{push}\t{aliases}",
                    file=out,
                )


def _alias(store: SqlStore, args: argparse.Namespace, out: TextIO) -> None:
    match args.alias_action:
        case "add":
            alias = add_alias(store, args.alias, args.line)
            print(f"alias {alias.alias} of line {alias.line} saved", file=out)
        case "rm":
            remove_alias(store, args.alias)
            print(f"alias {line_aor(args.alias)} removed", file=out)
        case _:
            for alias in store.line_aliases.load_all():
                print(f"{alias.alias}\t{alias.line}", file=out)


HANDLERS: dict[str, Callable[[SqlStore, argparse.Namespace, TextIO, TextIO], None]] = {
    "subscriber": _subscriber,
    "trusted": _trusted,
    "line": _line,
}


def run_command(
    url: str,
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run one directory command against the database at ``url``; returns the exit status."""
    store = SqlStore(url, pool_size=1)
    try:
        HANDLERS[args.command](store, args, out or sys.stdout, stdin or sys.stdin)
    except DirectoryError as error:
        print(f"scaserver {args.command} {args.action}: {error}", file=err or sys.stderr)
        return EXIT_FAILURE
    finally:
        store.close()
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# The directory as the running server reads it


def directory_domains(
    credentials: Iterable[Credentials], lines: Iterable[SharedLine], aliases: Iterable[str] = ()
) -> set[str]:
    """The domains of the subscribers (their realm), of the shared lines' AoRs and of the
    lines' aliases (a line reached by ``sip:100@pbx.example.com`` makes that domain ours)."""
    found = {c.realm for c in credentials}
    for aor in (*(line.aor for line in lines), *aliases):
        uri = parse_uri(aor)
        if isinstance(uri, SipUri):
            found.add(uri.host)
    return found


def member_of(
    lines: Callable[[], Iterable[SharedLine]],
    domains: DomainPolicy | frozenset[str],
    aliases: Callable[[], Mapping[str, str]] = dict,
) -> Callable[[str, str], bool]:
    """``(digest user, identity user) -> bool``: the user is the identity, or a member of the
    shared line named by the identity in one of our domains (members register and call as the
    line), directly or by one of the line's ``aliases`` (alias AoR -> line AoR, sca.md Q26)."""

    def allowed(username: str, identity_user: str) -> bool:
        if username == identity_user:
            return True
        named = {line for alias, line in aliases().items() if _user_in(alias, identity_user, domains)}
        for line in lines():
            if (line.aor in named or _user_in(line.aor, identity_user, domains)) and line.admits(
                user=username
            ):
                return True
        return False

    return allowed


def _user_in(aor: str, user: str, domains: DomainPolicy | frozenset[str]) -> bool:
    """Whether canonical ``aor`` is ``user`` at one of our domains."""
    found, _, host = aor.partition(":")[2].partition("@")
    return found == user and host.lower() in domains


def credential_lookup(credentials: Iterable[Credentials]) -> CredentialLookup:
    table = {(c.username, c.realm.lower()): c for c in credentials}

    def lookup(username: str, realm: str) -> Credentials | None:
        return table.get((username, realm.lower()))

    return lookup


def merged_lines(configured: Sequence[SharedLine], stored: Sequence[SharedLine]) -> list[SharedLine]:
    """Lines of the database, and of the configuration (which wins for the same AoR)."""
    lines = {line.aor: line for line in stored}
    lines.update((line.aor, line) for line in configured)
    return list(lines.values())


def line_aliases(
    written: Iterable[ConfiguredAlias], stored: Iterable[LineAlias], lines: Iterable[SharedLine]
) -> dict[str, str]:
    """The alias map (sca.md Q26): canonical alias AoR -> line AoR, from ``[[sca.aliases]]``
    (``written``) and the database.  The configuration wins for the same alias; a stored alias that is a
    line, or that names an alias instead of a line, is left out.  Each is logged."""
    configured: dict[str, str] = {}
    for configured_entry in written:
        alias, target = canonical_aor(configured_entry.alias), canonical_aor(configured_entry.line)
        if alias is not None and target is not None:  # checked when the file was loaded
            configured[alias] = target
    names = {line.aor for line in lines}
    merged: dict[str, str] = {}
    for entry in stored:
        if entry.alias in configured:
            if configured[entry.alias] != entry.line:
                log.warn(
                    "alias {alias}: the configuration's line {line} wins over {stored} of the database",
                    alias=entry.alias,
                    line=configured[entry.alias],
                    stored=entry.line,
                )
        elif entry.alias in names:
            log.warn(
                "alias {alias} of {line} ignored: it is a shared line", alias=entry.alias, line=entry.line
            )
        elif entry.line in configured:
            log.warn(
                "alias {alias} ignored: {line} is an alias, not a line", alias=entry.alias, line=entry.line
            )
        else:
            merged[entry.alias] = entry.line
    merged.update(configured)
    return merged


def configured_lines(
    written: Iterable[ConfiguredLine], domains: DomainPolicy | frozenset[str]
) -> list[SharedLine]:
    """The ``[[sca.lines]]`` of the configuration (``written``) as engine values.

    A member written as a SIP URI of a local domain also admits the digest user of
    that URI, so ``sip:2001a@example.com`` lets subscriber ``2001a`` on the line.
    """
    lines: list[SharedLine] = []
    for line in written:
        aor = canonical_aor(line.aor) or line.aor
        members: set[str] = set()
        for member in line.members:
            members.add(member)
            uri = canonical_aor(member)
            if uri is not None:
                members.add(uri)
                user, _, host = uri.partition(":")[2].partition("@")
                if host.lower() in domains:
                    members.add(user)
        lines.append(SharedLine(aor, line.appearances, frozenset(members), line.push_members))
    return lines
