"""The ``scaserver`` command.

::

    scaserver --version                      (also: python -m scaserver ...)
    scaserver check-config FILE
    scaserver run [--config FILE] [--sip HOST:PORT]... [--http HOST:PORT] [--db URL]
                  [--log-json] [--log-level LEVEL] [--trace]
    scaserver db upgrade|current [--config FILE] [--db URL]
    scaserver subscriber add|rm|list [USER@DOMAIN] [--password P]
    scaserver trusted add|rm|list [CIDR] [--transport T] [--tag NAME]
    scaserver line add|rm|list|members [AOR] [--appearances N] [--member M]... [--add M] [--remove M]
    scaserver device add|rm|list|show|identity ...; scaserver provision render MAC
    scaserver report NAME [--since T] [--until T] [--line AOR] [--format table|csv|json|png] [--output FILE]

Flags override the file.  ``--sip`` is repeatable and binds UDP and TCP on each
address (IPv6 as ``[::1]:5060``; an interface name binds its addresses).
Exit status: 0 on success, 2 for an unusable configuration (one line on stderr
naming the file and key), 1 when a database command fails.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from scaserver import __version__, directory
from scaserver.app import make_server
from scaserver.config.checks import upstream_problems
from scaserver.config.errors import ConfigError
from scaserver.config.load import load_settings, with_overrides
from scaserver.config.schema import Settings
from scaserver.controlroot import site_settings
from scaserver.edge.collector import PacedCollections, freeze_long_lived, tune_garbage_collector
from scaserver.edge.http import InsecureRpcBindError, TokenFileError
from scaserver.edge.resolver import HostsTable
from scaserver.edge.secret import SecretFileError
from scaserver.edge.services import Reactor
from scaserver.edge.threadswitch import shorten_thread_switch_interval
from scaserver.edge.tls import TlsConfigurationError, client_context, server_context
from scaserver.logs import start_logging
from scaserver.provisioning import commands as provisioning
from scaserver.reporting import commands as reports
from scaserver.store import migrate
from scaserver.store.engine import DatabaseError, MissingDriverError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
SHUTDOWN_GRACE_S = 5.0

_log = Logger(namespace="scaserver.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaserver", description="Shared Call Appearance SIP server")
    parser.add_argument("--version", action="version", version=f"scaserver {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", metavar="FILE")

    run = commands.add_parser("run", help="run the server")
    run.add_argument("--config", metavar="FILE", help="TOML configuration (default: built-in defaults)")
    run.add_argument(
        "--sip", metavar="HOST:PORT", action="append", default=[], help="SIP UDP+TCP address (repeatable)"
    )
    run.add_argument("--http", metavar="HOST:PORT", help="HTTP (JSON-RPC, metrics) address")
    run.add_argument("--db", metavar="URL", help="database URL")
    run.add_argument("--log-json", action="store_true", default=None, help="log JSON lines")
    run.add_argument("--log-level", choices=["debug", "info", "warn", "error", "critical"])
    run.add_argument("--trace", action="store_true", default=None, help="log every SIP message in and out")

    db = commands.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument("--config", metavar="FILE")
    db.add_argument("--db", metavar="URL", help="database URL (default: [database] url)")

    directory.add_subparsers(commands)
    reports.add_subparsers(commands)
    provisioning.add_subparsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scaserver`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        match args.command:
            case "check-config":
                settings = load_settings(args.file)
                check_tls(settings, args.file)
                for key, detail in upstream_problems(settings, HostsTable.load()):
                    raise ConfigError(args.file, key, detail)
                print(f"{args.file}: OK")
                return EXIT_OK
            case "run":
                return _run(args)
            case "db":
                return _db(args)
            case "subscriber" | "trusted" | "line":
                return _directory(args)
            case "device" | "provision":
                settings = settings_for(args)
                return provisioning.run(
                    args, database_url=settings.database.url, site=site_settings(settings)
                )
            case "report":
                return reports.run(args, database_url=settings_for(args).database.url)
            case _:
                _parser().print_usage(sys.stderr)
                return EXIT_CONFIG
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        return EXIT_CONFIG
    except MissingDriverError as error:
        print(f"scaserver {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILURE


def check_tls(settings: Settings, source: str) -> None:
    """The ``[tls]`` certificate, key and CA bundle load (a ConfigError naming the key if not)."""
    tls = settings.tls
    try:
        if tls.enabled:
            server_context(tls)
        client_context(tls)
    except TlsConfigurationError as error:
        key = "tls.ca_file" if "verify" in str(error).lower() else "tls.certificate"
        raise ConfigError(source, key, f"cannot load: {error}") from None


def settings_for(args: argparse.Namespace) -> Settings:
    """The file (or defaults) with the command-line flags applied."""
    settings = load_settings(args.config)
    return with_overrides(
        settings,
        sip=getattr(args, "sip", None) or (),
        http=getattr(args, "http", None),
        db=args.db,
        log_json=getattr(args, "log_json", None),
        log_level=getattr(args, "log_level", None),
        trace=getattr(args, "trace", None),
    )


def ensure_sqlite_directory(url: str) -> None:
    """Create the directory of a file-backed SQLite database (``sqlite:///var/x.db`` -> ``var/``)."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        path = url[len(prefix) :].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def _db(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    url = settings.database.url
    try:
        ensure_sqlite_directory(url)
        if args.action == "upgrade":
            migrate.upgrade(url)
            print(f"database at revision {migrate.current_revision(url)}")
        else:
            current = migrate.current_revision(url)
            head = migrate.head_revision()
            state = "up to date" if current == head else f"needs upgrade to {head}"
            print(f"{current or 'empty'} ({state})")
    except Exception as error:  # the one catch-all of this command: report and fail
        print(f"scaserver db {args.action}: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _directory(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    url = settings.database.url
    args.forced_realm = settings.auth.realm  # HA1 is hashed for the realm the server challenges in
    try:
        migrate.check_up_to_date(url)
    except migrate.SchemaOutOfDateError as error:
        print(f"scaserver {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return directory.run_command(url, args)


class MainReactor(Reactor, Protocol):
    """The reactor as the ``run`` command drives it."""

    def addSystemEventTrigger(  # noqa: N802
        self,
        phase: str,
        eventType: str,  # noqa: N803
        callable: Callable[..., object],
        *args: object,
    ) -> object: ...

    def callWhenRunning(self, callable: Callable[..., object], *args: object) -> object: ...  # noqa: N802

    def run(self) -> None: ...

    def stop(self) -> None: ...


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (TCP connections are file descriptors;
    ``security.max_connections`` should stay below it); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if resource.RLIM_INFINITY in (hard, soft) or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:
        _log.warn(
            "cannot raise the open files limit from {soft} to {hard}: {error}",
            soft=soft,
            hard=hard,
            error=str(error),
        )
        return soft
    _log.info("open files limit raised from {soft} to {hard}", soft=soft, hard=hard)
    return hard


def _run(args: argparse.Namespace) -> int:
    # Imported here: importing the reactor installs it, which only the running server may do.
    from twisted.internet import reactor as installed  # noqa: PLC0415

    settings = settings_for(args)
    check_tls(settings, args.config or "defaults")
    start_logging(settings.log)
    reactor = cast(MainReactor, installed)
    ensure_sqlite_directory(settings.database.url)
    try:
        service = make_server(settings, reactor)
    except migrate.SchemaOutOfDateError as error:
        print(f"scaserver run: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except (TokenFileError, InsecureRpcBindError) as error:
        print(f"{args.config or 'defaults'}: rpc: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except SecretFileError as error:
        print(f"{args.config or 'defaults'}: server.secret_file: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except DatabaseError as error:
        print(
            f"scaserver run: database {settings.database.url}: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    bind_errors: list[str] = []
    paced = PacedCollections(reactor)

    def start() -> None:
        # Started from inside the running reactor: its SIGINT/SIGTERM handlers are in place.
        try:
            service.startService()  # type: ignore[no-untyped-call]
        except Exception as error:  # a listener that cannot bind: a configuration the host cannot serve
            bind_errors.append(f"server.listen: cannot bind: {error}")
            reactor.stop()
            return
        # Up, its state restored: that state is frozen out of the collector's scans, and the
        # young generation is collected at a steady pace from now on.
        freeze_long_lived()
        paced.startService()

    def stop() -> Deferred[object]:
        if paced.running:
            paced.stopService()
        stopping: Deferred[object] = maybeDeferred(service.stopService)
        stopping.addTimeout(SHUTDOWN_GRACE_S, installed)

        def report(failure: Failure) -> None:
            _log.failure("shutdown did not complete cleanly", failure=failure)

        stopping.addErrback(report)
        return stopping

    def reload_directory() -> None:
        if service.sip.tls is not None:
            service.sip.tls.reload()  # new handshakes get the new certificate; open connections keep theirs
        if service.directory is not None:
            reloaded = service.directory.reload("SIGHUP")
            reloaded.addErrback(lambda failure: _log.failure("directory reload failed", failure=failure))

    tune_garbage_collector()
    shorten_thread_switch_interval()
    raise_open_files_limit()
    # SIGHUP: the directory (subscribers, trusted peers, lines) and the TLS certificate are
    # read again at once.
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reactor.callFromThread(reload_directory))
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()  # SIGINT/SIGTERM stop the reactor, which runs the shutdown trigger above
    for line in bind_errors:
        print(line, file=sys.stderr)
    return EXIT_CONFIG if bind_errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
