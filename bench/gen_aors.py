"""Write a SIPp injection file of shared-line members.

    python -m bench.gen_aors LINES MEMBERS OUTFILE [--first USER] [--password P]

One row per (line, member): ``user;member`` with ``user`` the line's AoR user and
``member`` a letter tag (``a``, ``b``, ...; past 26 members ``m26``, ``m27``...) that the
scenarios put in the Contact as ``;member=``.  Rows are member-major (every line for member
``a``, then every line for member ``b``...), so a sequential read never drives two members
of one line at the same instant and appearance index 1 of a line is free when its row
comes round again.  The first line is ``--first`` (default 200000).  With ``--password`` each
row gets a third field ``[authentication username=USER password=P]`` for SIPp's digest
(SIPp does not expand a field inside the ``[authentication]`` keyword of a scenario).
"""

from __future__ import annotations

import argparse
import string
from collections.abc import Iterator
from pathlib import Path

DEFAULT_FIRST_USER = 200000


def member_tag(index: int) -> str:
    """The member tag of the ``index``-th member of a line (0-based)."""
    letters = string.ascii_lowercase
    return letters[index] if index < len(letters) else f"m{index}"


def rows(lines: int, members: int, first: int = DEFAULT_FIRST_USER) -> Iterator[tuple[str, str]]:
    for member in range(members):
        for line in range(lines):
            yield str(first + line), member_tag(member)


def write(
    path: Path, lines: int, members: int, first: int = DEFAULT_FIRST_USER, password: str | None = None
) -> int:
    """Write the file; returns the number of rows."""
    count = 0
    with path.open("w") as out:
        out.write("SEQUENTIAL\n")
        for user, member in rows(lines, members, first):
            auth = f";[authentication username={user} password={password}]" if password else ""
            out.write(f"{user};{member}{auth}\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("lines", type=int)
    parser.add_argument("members", type=int)
    parser.add_argument("outfile", type=Path)
    parser.add_argument("--first", type=int, default=DEFAULT_FIRST_USER)
    parser.add_argument("--password")
    args = parser.parse_args(argv)
    write(args.outfile, args.lines, args.members, args.first, args.password)


if __name__ == "__main__":
    main()
