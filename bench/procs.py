"""The servers under test and what the bench reads about them from /proc.

:class:`ScaServer` runs ``scaserver run`` (after ``db upgrade``) from this source tree;
:class:`Kamailio` runs Kamailio 5.6 with its sca module through
``../shared/kamailio-reference/run-kamailio.sh`` (or, for the restore figure, the same
command line with a seeded database, which that script cannot be given).  CPU is the
utime+stime of a process and all its descendants; memory is the RSS sum and the PSS sum
(shared pages split between processes: the honest total for Kamailio's forked workers).
"""

from __future__ import annotations

import abc
import math
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import attrs

from bench.sipua import HOST, Endpoint, request

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "kamailio-reference"
RUN_KAMAILIO = REFERENCE / "run-kamailio.sh"
PYTHON = ROOT / ".venv" / "bin" / "python"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
START_TIMEOUT_S = 120.0


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@attrs.frozen
class Usage:
    """CPU seconds used so far and current memory of a process tree."""

    cpu_s: float
    rss_kb: int
    pss_kb: int


def usage(root: int) -> Usage:
    ticks = rss = pss = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            rss += int(fields[21]) * PAGE_KB
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
        except OSError:
            continue
    return Usage(ticks / TICKS, rss, pss)


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def answers_options(port: int, timeout: float) -> bool:
    """True once the server at HOST:port answers an OPTIONS (any final response)."""
    endpoint = Endpoint()
    try:
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            n += 1
            data = request(
                "OPTIONS",
                f"sip:{HOST}:{port}",
                local_port=endpoint.port,
                from_uri=f"sip:probe@{HOST}",
                from_tag="opt",
                to_uri=f"sip:{HOST}:{port}",
                call_id=f"options-{os.getpid()}-{n}@bench",
                cseq=1,
                contact=f"sip:probe@{HOST}:{endpoint.port}",
            )
            endpoint.send(data, (HOST, port))
            for message, _ in endpoint.receive(0.1):
                if not message.is_request and message.status >= 200:
                    return True
        return False
    finally:
        endpoint.close()


class Target(abc.ABC):
    """A server under test: ``name`` in tables, ``port`` for SIP on loopback."""

    name: str
    port: int
    workdir: Path

    @abc.abstractmethod
    def start(self, *, auth: bool = False) -> float:
        """Start serving (with digest authentication when ``auth``); seconds until OPTIONS is answered."""

    @abc.abstractmethod
    def pid(self) -> int:
        """The root process of the server."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server (idempotent)."""

    def usage(self) -> Usage:
        return usage(self.pid())

    def loop_lag(self) -> dict[float, float] | None:
        """Cumulative buckets (upper bound in s -> count) of the server's reactor-lag
        histogram, or None when it has none (Kamailio)."""
        return None


SCASERVER_CONFIG = """\
[server]
domains = ["127.0.0.1"]
[auth]
require = {require}
realm = "127.0.0.1"
algorithms = ["MD5"]
[log]
level = "warn"
[database]
flush_interval = 1.0
[sca]
# The load's phones have no accounts: every member of a line subscribes as the line's own AoR,
# so one identity holds all of a line's subscriptions (the fan-out probe's 32 members and a
# seize: 33); Kamailio's reference bounds none.
max_subscriptions_per_identity = 0
[security]
# The load comes from loopback at thousands of messages a second: like Kamailio's
# reference (no pike), no rate limit for it.
allow = ["127.0.0.0/8"]
"""


def lag_buckets(metrics_text: str) -> dict[float, float]:
    """``scaserver_reactor_lag_seconds_bucket`` of a /metrics page: upper bound -> count."""
    buckets: dict[float, float] = {}
    prefix = 'scaserver_reactor_lag_seconds_bucket{le="'
    for line in metrics_text.splitlines():
        if line.startswith(prefix):
            bound, _, count = line[len(prefix) :].partition('"} ')
            buckets[float(bound)] = float(count)
    return buckets


def lag_report(
    before: dict[float, float] | None, after: dict[float, float] | None
) -> dict[str, float] | None:
    """Between two readings of the histogram: probe ticks, ticks later than 50 ms, and the
    upper bound of the highest bucket that got a tick (the longest stall is at most that)."""
    if before is None or after is None:
        return None
    new = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    ticks = new.get(math.inf, 0.0)
    over = ticks - new.get(0.05, 0.0)
    worst = next((bound for bound, count in new.items() if count >= ticks), math.inf) if ticks else 0.0
    return {"ticks": ticks, "over_50ms": over, "max_lag_le_s": worst}


class ScaServer(Target):
    def __init__(
        self,
        workdir: Path,
        port: int,
        http_port: int,
        *,
        python_args: Sequence[str] = (),
        tree: Path = ROOT,
        name: str = "scaserver",
    ) -> None:
        self.name, self.port, self.http_port, self.workdir = name, port, http_port, workdir
        self.python_args = list(python_args)
        """Put before ``-m scaserver.cli run`` (e.g. ``-m cProfile -o FILE``)."""
        self.tree = tree
        """The tree run, with its ``.venv`` (another one: ``bench/pypybuild.py``)."""
        self.process: subprocess.Popen[bytes] | None = None
        self.db_file = workdir / "scaserver.db"

    @property
    def python(self) -> Path:
        return self.tree / ".venv" / "bin" / "python"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_file}"

    def prepare_db(self, template: Path | None = None) -> None:
        """An empty, upgraded database (copied from ``template`` when given)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.db_file}{suffix}").unlink(missing_ok=True)
        if template is not None:
            shutil.copyfile(template, self.db_file)
            return
        subprocess.run(
            [str(self.python), "-m", "scaserver.cli", "db", "upgrade", "--db", self.db_url],
            cwd=self.tree,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, *, auth: bool = False, fresh_db: bool = True) -> float:
        """Start the server; returns the seconds until it answered OPTIONS."""
        if fresh_db:
            self.prepare_db()
        config = self.workdir / "scaserver.toml"
        # BENCH_SCASERVER_TOML: more configuration for a measurement (say, "[reporting]
        # enabled = false" to see what the history costs).
        extra = os.environ.get("BENCH_SCASERVER_TOML", "")
        config.write_text(SCASERVER_CONFIG.format(require="true" if auth else "false") + extra)
        log = (self.workdir / "scaserver.log").open("ab")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [
                str(self.python),
                *self.python_args,
                "-m",
                "scaserver.cli",
                "run",
                "--sip",
                f"{HOST}:{self.port}",
                "--http",
                f"{HOST}:{self.http_port}",
                "--db",
                self.db_url,
                "--config",
                str(config),
            ],
            cwd=self.tree,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if not answers_options(self.port, START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"scaserver did not answer OPTIONS; see {self.workdir / 'scaserver.log'}")
        return time.monotonic() - started

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def loop_lag(self) -> dict[float, float] | None:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.http_port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        return lag_buckets(text)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Kamailio(Target):
    """Kamailio 5.6 + sca with ``children`` workers, runtime files in ``workdir``."""

    def __init__(self, workdir: Path, port: int, children: int) -> None:
        self.name = f"kamailio-{children}w"
        self.port, self.children, self.workdir = port, children, workdir
        self.direct: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, KAMAILIO_RUN_DIR=str(self.workdir))

    @property
    def pidfile(self) -> Path:
        return self.workdir / "kamailio.pid"

    @property
    def db_file(self) -> Path:
        return self.workdir / "kamailio.sqlite"

    def start(self, *, auth: bool = False) -> float:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [str(RUN_KAMAILIO), "start", HOST, str(self.port), str(self.children)]
        if auth:
            args.append("WITH_AUTH")
        started = time.monotonic()
        subprocess.run(args, env=self.env, check=True, capture_output=True, timeout=300)
        if not answers_options(self.port, START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"{self.name} did not answer OPTIONS")
        return time.monotonic() - started

    def start_seeded(self, db_file: Path, pkg_mb: int = 32) -> float:
        """Start with the database ``db_file`` (restore figure): run-kamailio.sh recreates its
        database on every start, so this is its command line with another DBURL."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("kamailio_ctl", "kamailio_rpc.fifo"):
            (self.workdir / name).unlink(missing_ok=True)
        http_port = self.port + 20
        defines = [
            f"LISTEN_IP={HOST}",
            f"SIP_PORT={self.port}",
            f"HTTP_PORT={http_port}",
            f'DBURL="sqlite:///{db_file}"',
            f'CTL_SOCKET="unix:{self.workdir}/kamailio_ctl"',
            f'RPC_FIFO="{self.workdir}/kamailio_rpc.fifo"',
        ]
        command = ["kamailio", "-f", str(REFERENCE / "kamailio.cfg"), "-DD", "-E", "-P", str(self.pidfile)]
        command += ["-n", str(self.children), "-m", os.environ.get("SHM_MB", "2048"), "-M", str(pkg_mb)]
        command += ["-w", str(self.workdir)]
        for define in defines:
            command += ["-A", define]
        log = (self.workdir / "kamailio-seeded.log").open("ab")
        started = time.monotonic()
        self.direct = subprocess.Popen(command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not answers_options(self.port, START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"{self.name} (seeded) did not answer OPTIONS")
        return time.monotonic() - started

    def pid(self) -> int:
        if self.direct is not None:
            return self.direct.pid
        return int(self.pidfile.read_text().strip())

    def stop(self) -> None:
        direct, self.direct = self.direct, None
        if direct is not None:
            if direct.poll() is None:
                direct.send_signal(signal.SIGTERM)
                try:
                    direct.wait(15)
                except subprocess.TimeoutExpired:
                    direct.kill()
                    direct.wait(5)
            self.pidfile.unlink(missing_ok=True)
            return
        subprocess.run(
            [str(RUN_KAMAILIO), "stop"], env=self.env, check=False, capture_output=True, timeout=60
        )

    def rpc(self, *args: str) -> str:
        result = subprocess.run(
            [str(RUN_KAMAILIO), "rpc", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout
