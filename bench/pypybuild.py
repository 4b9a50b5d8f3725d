"""Build a copy of this tree that PyPy runs, out of the tree, to measure it beside CPython.

    python -m bench.pypybuild /tmp/scaserver-pypy
    cd /tmp/scaserver-pypy && .venv/bin/python -m bench.corecalls --scenario seize --count 3000
    python -m bench.floor --pypy /tmp/scaserver-pypy --warm 2

The one PyPy this machine's package registries offer is Debian's ``pypy3`` 7.3.11, a Python
3.9 (``apt-get install pypy3 pypy3-venv``); this code base is written for 3.11. ``scaserver/``,
``bench/`` and the directories the package links to (``migrations/``, ``rpc/``,
``polycom-profiles/``) are copied to OUT (the repository is never written to) and each
module is rewritten from its syntax tree (``ast.unparse``: comments and the annotations of
functions are dropped):

* ``A | B`` of types evaluated at run time becomes ``typing.Union[A, B]``, and
  ``isinstance(x, A | B)`` becomes ``isinstance(x, (A, B))``; so do the annotations of names and
  attributes, which cattrs reads when it builds the settings;
* a ``match`` statement becomes an ``if``/``elif`` chain over the same patterns, its captures
  bound with ``:=`` in the conditions;
* ``zip(..., strict=True)`` loses ``strict`` (3.10): the build does not check those lengths;
* ``importlib.resources.abc`` becomes ``importlib.abc``.

The copy's ``.venv`` (PyPy's) gets the project's dependencies from ``pyproject.toml``, with
cryptography held at 43 (the last release with PyPy 3.9 wheels), and a ``sitecustomize`` that
gives 3.9 the 3.11 names the code uses (``enum.StrEnum``, ``datetime.UTC``, ``tomllib`` from
tomli, typing's newer names from typing_extensions) and puts the ``gc`` functions the edge calls
over PyPy's collector: it has no generations to pace (its major collection is incremental) and
its ``gc.collect()`` is always a full one, so a collection of a younger generation does nothing.

The build is for measuring, not for deployment. The suite does not run on it; the rewriting is
checked by the measurements' own checks: ``bench.corecalls`` asserts every answer it waits for,
and a ``bench.floor`` step passes only when its REGISTERs are answered 200.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPIED = ("scaserver", "bench", "migrations", "rpc", "polycom-profiles")
PYPY = "pypy3"
PINNED = ("cryptography==43.0.3", "pyOpenSSL<25", "tomli")
BUILTIN_TYPES = frozenset(
    {"int", "str", "bytes", "float", "bool", "dict", "list", "tuple", "set", "frozenset", "object", "type"}
)
UNION_MODULE = "typing_for_pypy_"

SITECUSTOMIZE = '''\
"""The 3.11 names scaserver uses, on PyPy 3.9 (bench/pypybuild.py)."""
import datetime
import enum
import gc
import sys
import typing

import tomli
import typing_extensions


class StrEnum(str, enum.Enum):
    def _generate_next_value_(name, start, count, last_values):
        return name.lower()

    __str__ = str.__str__
    __format__ = str.__format__


enum.StrEnum = StrEnum
datetime.UTC = datetime.timezone.utc
sys.modules["tomllib"] = tomli
for name in ("TypeAlias", "ParamSpec", "Concatenate", "Self", "Never", "assert_never", "TypeGuard", "Unpack"):
    if not hasattr(typing, name):
        setattr(typing, name, getattr(typing_extensions, name))

_full_collection = gc.collect


def collect(generation=2):
    return _full_collection() if generation >= 2 else 0


gc.collect = collect
gc.callbacks = getattr(gc, "callbacks", [])
for name, stand_in in (
    ("get_count", lambda: (0, 0, 0)),
    ("get_threshold", lambda: (700, 10, 10)),
    ("set_threshold", lambda *thresholds: None),
    ("freeze", lambda: None),
    ("unfreeze", lambda: None),
    ("get_freeze_count", lambda: 0),
):
    if not hasattr(gc, name):
        setattr(gc, name, stand_in)
'''


def _names_a_type(node: ast.expr) -> bool:
    """Whether ``node`` reads as a type: ``None``, a builtin type, a CamelCase name or
    attribute, a subscript of one, or a union of them (an ALL_CAPS name is a constant)."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Name):
        return node.id in BUILTIN_TYPES or (node.id[:1].isupper() and not node.id.isupper())
    if isinstance(node, ast.Attribute):
        return node.attr[:1].isupper() and not node.attr.isupper()
    if isinstance(node, ast.Subscript):
        return _names_a_type(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _names_a_type(node.left) and _names_a_type(node.right)
    return False


def _members(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _members(node.left) + _members(node.right)
    return [node]


def _load(name: str) -> ast.Name:
    return ast.Name(name, ast.Load())


def _all(conditions: list[ast.expr]) -> ast.expr:
    if not conditions:
        return ast.Constant(True)
    return conditions[0] if len(conditions) == 1 else ast.BoolOp(ast.And(), conditions)


def _bound(name: str, value: ast.expr) -> ast.expr:
    """``((name := value) or True)``: binds inside a condition, always true."""
    return ast.BoolOp(ast.Or(), [ast.NamedExpr(ast.Name(name, ast.Store()), value), ast.Constant(True)])


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(_load(name), list(args), [])


def _pattern(pattern: ast.pattern, subject: ast.expr) -> ast.expr:
    """The condition that ``subject`` matches ``pattern``, binding its captures."""
    if isinstance(pattern, ast.MatchAs):
        captured = [] if pattern.pattern is None else [_pattern(pattern.pattern, subject)]
        if pattern.name:
            captured.append(_bound(pattern.name, subject))
        return _all(captured)
    if isinstance(pattern, ast.MatchValue):
        return ast.Compare(subject, [ast.Eq()], [pattern.value])
    if isinstance(pattern, ast.MatchSingleton):
        return ast.Compare(subject, [ast.Is()], [ast.Constant(pattern.value)])
    if isinstance(pattern, ast.MatchOr):
        return ast.BoolOp(ast.Or(), [_pattern(each, subject) for each in pattern.patterns])
    if isinstance(pattern, ast.MatchClass):
        conditions: list[ast.expr] = [_call("isinstance", subject, pattern.cls)]
        itself = isinstance(pattern.cls, ast.Name) and pattern.cls.id in BUILTIN_TYPES
        for index, each in enumerate(pattern.patterns):
            if itself and index == 0:
                conditions.append(_pattern(each, subject))
                continue
            slot = ast.Subscript(
                ast.Attribute(pattern.cls, "__match_args__", ast.Load()), ast.Constant(index)
            )
            conditions.append(_pattern(each, _call("getattr", subject, slot)))
        for attribute, each in zip(pattern.kwd_attrs, pattern.kwd_patterns, strict=True):
            conditions.append(_pattern(each, ast.Attribute(subject, attribute, ast.Load())))
        return _all(conditions)
    if isinstance(pattern, ast.MatchSequence):
        return _sequence(pattern, subject)
    # What is left is a mapping: a star pattern stands only inside a sequence (_sequence).
    assert isinstance(pattern, ast.MatchMapping), ast.dump(pattern)
    conditions = [_call("isinstance", subject, _load("dict"))]
    for key, each in zip(pattern.keys, pattern.patterns, strict=True):
        conditions.append(ast.Compare(key, [ast.In()], [subject]))
        conditions.append(_pattern(each, ast.Subscript(subject, key, ast.Load())))
    if pattern.rest:
        conditions.append(_bound(pattern.rest, subject))
    return _all(conditions)


def _sequence(pattern: ast.MatchSequence, subject: ast.expr) -> ast.expr:
    shape = ast.Tuple([_load("list"), _load("tuple")], ast.Load())
    conditions: list[ast.expr] = [_call("isinstance", subject, shape)]
    count = len(pattern.patterns)
    star = next((i for i, each in enumerate(pattern.patterns) if isinstance(each, ast.MatchStar)), None)
    length = _call("len", subject)
    if star is None:
        conditions.append(ast.Compare(length, [ast.Eq()], [ast.Constant(count)]))
        for index, each in enumerate(pattern.patterns):
            conditions.append(_pattern(each, ast.Subscript(subject, ast.Constant(index), ast.Load())))
        return _all(conditions)
    conditions.append(ast.Compare(length, [ast.GtE()], [ast.Constant(count - 1)]))
    after = count - 1 - star
    for index, each in enumerate(pattern.patterns):
        if index < star:
            conditions.append(_pattern(each, ast.Subscript(subject, ast.Constant(index), ast.Load())))
        elif index > star:
            conditions.append(_pattern(each, ast.Subscript(subject, ast.Constant(index - count), ast.Load())))
        elif isinstance(each, ast.MatchStar) and each.name:
            rest = ast.Slice(ast.Constant(star), ast.Constant(-after) if after else None)
            conditions.append(_bound(each.name, _call("list", ast.Subscript(subject, rest, ast.Load()))))
    return _all(conditions)


class _ForPython39(ast.NodeTransformer):
    """The rewriting the module docstring lists."""

    def __init__(self) -> None:
        self._subjects: Iterator[int] = itertools.count()

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if isinstance(node.func, ast.Name):
            if node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
                kinds = node.args[1]
                if isinstance(kinds, ast.BinOp) and isinstance(kinds.op, ast.BitOr) and _names_a_type(kinds):
                    node.args[1] = ast.Tuple(_members(kinds), ast.Load())
            elif node.func.id == "zip":
                node.keywords = [keyword for keyword in node.keywords if keyword.arg != "strict"]
        self.generic_visit(node)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.BitOr) and _names_a_type(node):
            union = ast.Attribute(_load(UNION_MODULE), "Union", ast.Load())
            return ast.Subscript(union, ast.Tuple(_members(node), ast.Load()), ast.Load())
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        node.annotation = self.visit(node.annotation)
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._function(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        arguments = node.args
        for argument in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs):
            argument.annotation = None
        for rest in (arguments.vararg, arguments.kwarg):
            if rest is not None:
                rest.annotation = None
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_Match(self, node: ast.Match) -> list[ast.stmt]:
        self.generic_visit(node)
        subject = f"match_subject_{next(self._subjects)}"
        first: ast.If | None = None
        last: ast.If | None = None
        for case in node.cases:
            condition = _pattern(case.pattern, _load(subject))
            if case.guard is not None:
                condition = ast.BoolOp(ast.And(), [condition, case.guard])
            branch = ast.If(condition, case.body, [])
            if last is None:
                first = branch
            else:
                last.orelse = [branch]
            last = branch
        assert first is not None, "a match statement has a case"
        return [ast.Assign([ast.Name(subject, ast.Store())], node.subject), first]


def for_python39(source: str) -> str:
    """``source`` rewritten for Python 3.9 (the module docstring's list)."""
    tree = _ForPython39().visit(ast.parse(source))
    assert isinstance(tree, ast.Module)
    after = 0
    for index, statement in enumerate(tree.body):
        if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
            after = index + 1
        elif index == 0 and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            after = 1
    tree.body.insert(after, ast.Import([ast.alias("typing", UNION_MODULE)]))
    text = ast.unparse(ast.fix_missing_locations(tree))
    return text.replace("importlib.resources.abc", "importlib.abc") + "\n"


def dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    held = {pin.split("=")[0].split("<")[0].lower() for pin in PINNED}
    kept = [d for d in project["dependencies"] if d.split(">")[0].split("[")[0].lower() not in held]
    return [*kept, *PINNED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the directory to build in (replaced)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    if shutil.which(PYPY) is None:
        print(f"{PYPY} not found: apt-get install pypy3 pypy3-venv", file=sys.stderr)
        return 1
    shutil.rmtree(out, ignore_errors=True)
    for name in COPIED:
        shutil.copytree(REPO / name, out / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for path in sorted(out.rglob("*.py")):
        path.write_text(for_python39(path.read_text()))
    venv = out / ".venv"
    subprocess.run([PYPY, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--only-binary",
        "cryptography",
        *dependencies(),
    ]
    subprocess.run(install, check=True)
    site = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "sitecustomize.py").write_text(SITECUSTOMIZE)
    probe = subprocess.run(
        [str(python), "-c", "import scaserver.cli, scaserver.app, bench.corecalls"],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        print(f"the build fails at import: {probe.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    print(f"{out}: scaserver for PyPy, {out / '.venv' / 'bin' / 'python'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
