"""Recorded groups (the paper's offline setting): a file of protobuf `Group`s, written once, replayed for epochs.

Format: the line `SGPO-GROUPS 2\n`, then for each group a 4-byte little-endian length and the serialized
`sgpo.v1.Group`. Every wrong completion of every group is judged at recording time, so a replay can score
the same samples under any algorithm, color scope or rts unit. Version 2 judgements carry step lengths;
version 1 files (judgements with an rts instead) are still read: `sgpo.common.convert` turns each rts into
step lengths that reproduce it exactly.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sgpo.common.convert import group_from_bytes, group_to_bytes
from sgpo.core.errors import InvalidInputError
from sgpo.core.types import Group

MAGIC = b"SGPO-GROUPS 2\n"
READABLE = (MAGIC, b"SGPO-GROUPS 1\n")


class GroupWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO = path.open("wb")
        self._f.write(MAGIC)
        self.count = 0

    def write(self, group: Group) -> None:
        data = group_to_bytes(group)
        self._f.write(struct.pack("<I", len(data)) + data)
        self._f.flush()
        self.count += 1

    put = write  # a GroupWriter is a sink for the orchestrator's loop, like the queue

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> GroupWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_groups(path: Path) -> Iterator[Group]:
    if not path.is_file():
        raise InvalidInputError("replay", f"{path} does not exist; create it with `sgpo record`")
    with path.open("rb") as f:
        if f.read(len(MAGIC)) not in READABLE:
            raise InvalidInputError("replay", f"{path} is not a file written by `sgpo record`")
        index = 0
        while header := f.read(4):
            if len(header) < 4:
                raise InvalidInputError("replay", f"{path} is truncated after group {index}")
            (size,) = struct.unpack("<I", header)
            data = f.read(size)
            if len(data) < size:
                raise InvalidInputError("replay", f"{path} is truncated inside group {index}")
            yield group_from_bytes(data)
            index += 1
