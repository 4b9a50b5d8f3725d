"""Compile a copy of the pure core with mypyc, out of the tree, to measure it with ``bench.corecalls``.

    python -m bench.mypycbuild /tmp/scaserver-mypyc --modules sip
    cd /tmp && PYTHONPATH=/tmp/scaserver-mypyc:$REPO python -m bench.corecalls

``scaserver/`` is copied to OUT and the chosen modules are compiled there (the repository
is never written to); every compiled module is then imported in a fresh interpreter, so that
a module that builds but fails at import is reported. Run the measurement from another
directory than the repository: ``python -m`` puts the current directory first on the path,
where the pure package would win. Needs mypy (mypyc ships with it), a C compiler and the
Python headers. A build of the whole ``core`` set takes several minutes on 2 cores.

Module sets (``--modules``): ``parser`` (parser and serializer), ``sip`` (every module of
``scaserver/sip`` that mypyc can own) and ``core`` (``sip`` with the router, the SCA engine,
the registrar, the proxy and the event bus). Left out, and why (bench/RESULTS.md):
``sip/errors.py`` (exceptions with two bases: mypyc has no multiple inheritance),
``sip/actions.py`` (``Fact`` and ``Instruction`` would become native classes, and an attrs
class cannot inherit from a native one), ``router/router.py`` (property setters, which mypyc
does not support on a non-native class).

The build is for measuring, not for running: mypyc compiles ``a == b`` between two instances of
an attrs class of the same build to ``a is b`` (the class body defines no ``__eq__``; attrs adds
it at run time, and mypyc only knows that of dataclasses), so equal values compare unequal.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN = Path(__file__).resolve().parent / "mypycattrs.py"
LEFT_OUT = {"sip/errors.py", "sip/actions.py", "router/router.py"}


def modules(chosen: str) -> list[str]:
    if chosen == "parser":
        return ["scaserver/sip/parser.py", "scaserver/sip/serializer.py"]
    packages = ["sip"] if chosen == "sip" else ["sip", "router", "sca", "registrar", "proxy"]
    found = [
        f"scaserver/{package}/{path.name}"
        for package in packages
        for path in sorted((REPO / "scaserver" / package).glob("*.py"))
        if path.name != "__init__.py" and f"{package}/{path.name}" not in LEFT_OUT
    ]
    return found + (["scaserver/events.py"] if chosen == "core" else [])


def config(out: Path) -> Path:
    """The build's mypy configuration: the project's strictness, and the plugin."""
    path = out / "mypyc.ini"
    path.write_text(
        "[mypy]\nstrict = True\npython_version = 3.11\n"
        f"plugins = {PLUGIN}\n"
        "[mypy-pyroute2.*,treq.*,prometheus_client.*,alembic.*,zope.*]\nignore_missing_imports = True\n"
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the directory to build in (replaced)")
    parser.add_argument("--modules", choices=("parser", "sip", "core"), default="sip")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(REPO / "scaserver", out / "scaserver", ignore=shutil.ignore_patterns("__pycache__"))
    files = modules(args.modules)
    build = [sys.executable, "-m", "mypyc", "--config-file", str(config(out)), *files]
    if subprocess.run(build, cwd=out, check=False).returncode != 0:
        print("mypyc failed", file=sys.stderr)
        return 1
    failed = 0
    for file in files:
        name = file.removesuffix(".py").replace("/", ".")
        probe = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", f"import {name}"],
            cwd="/",
            env={"PYTHONPATH": str(out)},
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            failed += 1
            print(f"{name} fails at import: {probe.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    print(f"{len(files)} modules compiled in {out}, {failed} failing at import")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
