"""``scaserver device ...`` and ``scaserver provision render MAC`` (provisioning.md section 3).

::

    scaserver device add MAC --family FAMILY [--model M] [--description TEXT] [--owner USER@DOMAIN]
                         [--prov-user U --prov-password P [--realm R]] [--disabled] [--replace]
                         [--line AOR[,position=N][,first_key=K][,keys=N][,calls=N][,label=L]
                                 [,barge_in=yes]]...
                         [--override NAME=VALUE]...
    scaserver device rm MAC
    scaserver device list
    scaserver device show MAC
    scaserver device identity AOR --auth-user U --password P [--display-name NAME]
    scaserver provision render MAC [--file NAME]

``add_subparsers(subparsers)`` adds ``device`` and ``provision`` to the ``scaserver`` parser;
``run(args, database_url=..., site=...)`` executes either (the CLI resolves ``--config`` and
passes ``[database] url`` and the provisioning site settings; ``--db`` wins over the URL).

``device identity`` stores the AoR a phone registers and its digest user and password
(section 6: phones need the plaintext; the database file must be protected accordingly).
A line is shared when its AoR is an SCA line (``scaserver line add``, or ``[[sca.lines]]`` in
the configuration).  Barge-in is off unless ``barge_in=yes`` (the SCA engine refuses it).  The device's HTTP
password is stored only as its MD5 HA1 in ``--realm`` (RFC 7616 section 3.4.2).

Exit status: 0 on success, 1 when the database fails, 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Final, TextIO

from scaserver.provisioning.access import DEFAULT_REALM, Secret
from scaserver.provisioning.mac import ZERO_MAC, canonical_mac
from scaserver.provisioning.profile import (
    ProfileError,
    SiteSettings,
    Templates,
    capacity_warnings,
    files_for,
    placement_errors,
    render,
)
from scaserver.sca.line import canonical_aor
from scaserver.store.engine import DatabaseError, make_engine
from scaserver.store.provisioning import (
    Device,
    DeviceLine,
    Family,
    LineIdentity,
    ProvisioningRepository,
    SqlProvisioningRepository,
)

__all__ = ["add_subparsers", "parse_line_spec", "run"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2


class CommandError(Exception):
    """Unusable arguments; the message is printed after ``scaserver <command>:``."""


def add_subparsers(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``device`` and ``provision`` to the ``scaserver`` command's sub-commands."""
    device = subparsers.add_parser("device", help="handsets provisioned over HTTP")
    actions = device.add_subparsers(dest="device_action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add (or with --replace, replace) a device")
    add.add_argument("mac", metavar="MAC")
    add.add_argument("--family", required=True, choices=[family.value for family in Family])
    add.add_argument("--model", help="model, e.g. VVX411, CP-8841-3PCC, SPA504G")
    add.add_argument("--description")
    add.add_argument("--owner", metavar="USER@DOMAIN", help="the subscriber the device belongs to")
    add.add_argument("--prov-user", metavar="USER", help="HTTP digest user for this device's files")
    add.add_argument("--prov-password", metavar="PASSWORD")
    add.add_argument("--realm", default=DEFAULT_REALM, help="HTTP digest realm of --prov-user")
    add.add_argument("--disabled", action="store_true", help="refuse its fetches (403)")
    add.add_argument("--replace", action="store_true", help="replace an existing device")
    add.add_argument("--line", action="append", default=[], metavar="SPEC", help="AOR[,position=N,...]")
    add.add_argument("--override", action="append", default=[], metavar="NAME=VALUE")

    for name, text in (("rm", "remove a device"), ("show", "show a device")):
        action = actions.add_parser(name, help=text)
        action.add_argument("mac", metavar="MAC")
    actions.add_parser("list", help="list devices")

    identity = actions.add_parser("identity", help="set the registration identity of an AoR")
    identity.add_argument("aor", metavar="AOR")
    identity.add_argument("--auth-user", required=True)
    identity.add_argument("--password", required=True)
    identity.add_argument("--display-name")

    for parser in actions.choices.values():
        parser.add_argument("--config", metavar="FILE", help="TOML configuration giving [database] url")
        parser.add_argument("--db", metavar="URL", help="database URL (default: [database] url)")

    provision = subparsers.add_parser("provision", help="provisioning files")
    provision_actions = provision.add_subparsers(dest="provision_action", metavar="ACTION", required=True)
    render_parser = provision_actions.add_parser("render", help="print a device's generated file")
    render_parser.add_argument("mac", metavar="MAC")
    render_parser.add_argument("--file", metavar="NAME", help="which file (default: the device's main one)")
    render_parser.add_argument("--config", metavar="FILE", help="TOML configuration")
    render_parser.add_argument("--db", metavar="URL", help="database URL (default: [database] url)")


def _mac(text: str) -> str:
    mac = canonical_mac(text)
    if mac is None or mac == ZERO_MAC:
        raise CommandError(f"{text!r} is not a MAC address (e.g. 00:04:f2:a1:b2:c3)")
    return mac


def _aor(text: str) -> str:
    aor = canonical_aor(text if text.startswith(("sip:", "sips:")) else f"sip:{text}")
    if aor is None:
        raise CommandError(f"{text!r}: expected a SIP AoR such as sip:2001@example.com")
    return aor


_INT_FIELDS: Final = {
    "position": "position",
    "first_key": "first_key",
    "keys": "line_keys",
    "calls": "calls_per_key",
}


def parse_line_spec(text: str, default_position: int) -> tuple[str, dict[str, Any]]:
    """``AOR[,position=N][,first_key=K][,keys=N][,calls=N][,label=L][,barge_in=yes|no]`` ->
    (canonical AoR, ``DeviceLine`` fields other than ``line``)."""
    head, *options = text.split(",")
    fields: dict[str, Any] = {"position": default_position}
    for option in options:
        name, eq, value = option.partition("=")
        name = name.strip()
        if not eq:
            raise CommandError(f"--line {text!r}: {option!r} is not NAME=VALUE")
        if name in _INT_FIELDS:
            if not value.strip().isdigit() or int(value) < 1:
                raise CommandError(f"--line {text!r}: {name} must be a positive integer")
            fields[_INT_FIELDS[name]] = int(value)
        elif name == "label":
            fields["label"] = value
        elif name == "barge_in":
            if value.lower() not in ("yes", "no"):
                raise CommandError(f"--line {text!r}: barge_in is yes or no")
            fields["barge_in"] = value.lower() == "yes"
        else:
            raise CommandError(f"--line {text!r}: unknown option {name!r}")
    if "first_key" not in fields:
        fields["first_key"] = fields["position"]
    return _aor(head), fields


def _overrides(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for value in values:
        name, eq, setting = value.partition("=")
        if (
            not eq
            or not name.strip()
            or not name.replace(".", "").replace("_", "").replace("-", "").isalnum()
        ):
            raise CommandError(f"--override {value!r}: expected NAME=VALUE with a parameter name")
        pairs.append((name.strip(), setting))
    return tuple(pairs)


def _add(repo: ProvisioningRepository, args: argparse.Namespace, out: TextIO) -> None:
    mac = _mac(args.mac)
    if repo.device(mac) is not None and not args.replace:
        raise CommandError(f"device {mac} exists (use --replace)")
    if bool(args.prov_user) != bool(args.prov_password):
        raise CommandError("--prov-user and --prov-password go together")
    secret = Secret.from_password(args.prov_user, args.realm, args.prov_password) if args.prov_user else None
    placed: list[DeviceLine] = []
    for index, spec in enumerate(args.line, start=1):
        aor, fields = parse_line_spec(spec, index)
        identity = repo.line(aor)
        if identity is None:
            raise CommandError(f"no registration identity for {aor}: add it with `scaserver device identity`")
        placed.append(DeviceLine(line=identity, **fields))
    device = Device(
        mac=mac,
        family=Family(args.family),
        model=args.model,
        description=args.description,
        owner=args.owner,
        enabled=not args.disabled,
        prov_username=None if secret is None else secret.username,
        prov_realm=None if secret is None else secret.realm,
        prov_ha1=None if secret is None else secret.ha1,
        template_overrides=_overrides(args.override),
        lines=tuple(placed),
    )
    errors = placement_errors(device)
    if errors:
        raise CommandError(f"device {mac}: " + "; ".join(errors))
    repo.save_device(device)
    print(f"device {mac} saved", file=out)
    for warning in capacity_warnings(device):
        print(f"warning: {warning}", file=out)


def _describe(device: Device) -> list[str]:
    auth = f"{device.prov_username} (realm {device.prov_realm})" if device.prov_username else "site default"
    rows = [
        f"mac:          {device.mac}",
        f"family:       {device.family.value}",
        f"model:        {device.model or '-'}",
        f"description:  {device.description or '-'}",
        f"owner:        {device.owner or '-'}",
        f"enabled:      {'yes' if device.enabled else 'no'}",
        f"http auth:    {auth}",
        f"last seen:    {device.last_seen_at.isoformat() if device.last_seen_at else '-'}"
        f" from {device.last_seen_ip or '-'}, firmware {device.firmware_seen or '-'}",
    ]
    for name, value in device.template_overrides:
        rows.append(f"override:     {name}={value}")
    for placed in sorted(device.lines, key=lambda p: p.position):
        kind = "shared" if placed.line.shared else "private"
        rows.append(
            f"line {placed.position}:       {placed.line.aor} ({kind}) as {placed.line.auth_username}, "
            f"keys {placed.first_key}..{placed.keys.stop - 1} x {placed.calls_per_key} calls, "
            f"label {placed.label or '-'}, barge-in {'yes' if placed.barge_in else 'no'}"
        )
    return rows


def _device_command(repo: ProvisioningRepository, args: argparse.Namespace, out: TextIO) -> None:
    match args.device_action:
        case "add":
            _add(repo, args, out)
        case "rm":
            mac = _mac(args.mac)
            if not repo.remove_device(mac):
                raise CommandError(f"no device {mac}")
            print(f"device {mac} removed", file=out)
        case "list":
            for device in repo.devices():
                positions = ",".join(p.line.aor for p in sorted(device.lines, key=lambda p: p.position))
                state = "" if device.enabled else " (disabled)"
                print(
                    f"{device.mac} {device.family.value} {device.model or '-'} {positions or '-'}{state}",
                    file=out,
                )
        case "show":
            mac = _mac(args.mac)
            found = repo.device(mac)
            if found is None:
                raise CommandError(f"no device {mac}")
            print("\n".join(_describe(found)), file=out)
        case "identity":
            if not args.password:
                raise CommandError("the password must not be empty")
            aor = _aor(args.aor)
            repo.save_line(LineIdentity(aor, args.auth_user, args.password, args.display_name))
            print(f"identity of {aor} saved", file=out)
        case other:
            raise CommandError(f"unknown action {other!r}")


def _render_command(
    repo: ProvisioningRepository, args: argparse.Namespace, site: SiteSettings, out: TextIO, err: TextIO
) -> None:
    mac = _mac(args.mac)
    device = repo.device(mac)
    if device is None:
        raise CommandError(f"no device {mac}")
    files = files_for(device)
    if not files:
        raise CommandError(f"device {mac}: no generator for family {device.family.value}")
    chosen = files[-1] if args.file is None else next((f for f in files if f[0] == args.file), None)
    if chosen is None:
        names = ", ".join(name for name, _ in files)
        raise CommandError(f"device {mac} has no file {args.file!r}; its files: {names}")
    try:
        profile = render(chosen[1], Templates.load(), site, device)
    except ProfileError as error:
        raise CommandError(str(error)) from None
    out.write(profile.body.decode("utf-8"))
    for warning in profile.warnings:
        print(f"warning: {warning}", file=err)


def run(
    args: argparse.Namespace,
    *,
    database_url: str | None = None,
    site: SiteSettings | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Execute ``scaserver device ...`` or ``scaserver provision ...``; returns the exit status.

    ``site`` is needed by ``provision render`` (the SIP address and provisioning URL the
    profiles point at).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    url = getattr(args, "db", None) or database_url
    if not url:
        print(f"scaserver {args.command}: no database: give --db URL or [database] url", file=err)
        return EXIT_USAGE
    engine = make_engine(url, pool_size=1)
    try:
        repo = SqlProvisioningRepository(engine)
        if args.command == "provision":
            if site is None:
                raise CommandError("no provisioning site settings (SIP host, base URL) configured")
            _render_command(repo, args, site, out, err)
        else:
            _device_command(repo, args, out)
    except CommandError as error:
        print(f"scaserver {args.command}: {error}", file=err)
        return EXIT_USAGE
    except DatabaseError as error:
        print(f"scaserver {args.command}: database: {type(error).__name__}: {error}", file=err)
        return EXIT_FAILURE
    finally:
        engine.dispose()
    return EXIT_OK
