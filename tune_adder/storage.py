"""Where a sweep's files live: a local folder or any pyarrow URI (s3://, gs://), written atomically.

Every write goes to a temporary name first and is then moved over the target, so a crash mid-write
leaves the previous good copy.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from tune_adder.paths import check_can_write_under


@dataclass(frozen=True)
class Storage:
    """A filesystem and a root path in it; `uri` is what Ray's RunConfig(storage_path=...) gets."""

    fs: pafs.FileSystem
    root: str
    uri: str

    @classmethod
    def from_arg(cls, arg: str) -> Storage:
        """A local path (made absolute) or a URI with a scheme such as s3://bucket/prefix."""
        if "://" in arg:
            fs, root = pafs.FileSystem.from_uri(arg)
            return cls(fs, root.rstrip("/"), arg.rstrip("/"))
        expanded = os.path.expanduser(arg)
        if expanded.startswith("~"):  # "~nosuchuser/x" stays as it is: it would make a folder named "~nosuchuser" here
            user = arg.split("/", 1)[0]
            raise ValueError(f"{user} names no user's home folder on this machine; give a path or a URI")
        root = os.path.abspath(expanded)
        return cls(pafs.LocalFileSystem(), root, root)

    def check_writable(self) -> None:
        """Raise ValueError unless a local root is, or can be made as, a folder we can write; remote roots are not probed."""
        if self.is_local:
            check_can_write_under(self.root)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def uri_of(self, *parts: str) -> str:
        """What a user can paste to reach `parts` under the root: the local path, or the URI with its query kept
        (s3://bucket/prefix/NAME?endpoint_override=...), not the filesystem's bare bucket path."""
        if self.is_local:
            return self.path(*parts)
        base, _, query = self.uri.partition("?")
        return "/".join([base.rstrip("/"), *parts]) + (f"?{query}" if query else "")

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write `data` to a temporary sibling, then move it over `path`."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.fs.move(tmp, path)  # a rename on local disks: atomic

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def write_json(self, path: str, obj: dict[str, Any]) -> None:
        self.write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

    def read_json(self, path: str) -> dict[str, Any]:
        return json.loads(self.read_bytes(path))

    def write_parquet(self, path: str, frame: pd.DataFrame) -> None:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        self.write_bytes(path, buf.getvalue())

    def read_parquet(self, path: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.read_bytes(path)))

    def move_aside(self, path: str, suffix: str) -> str:
        """Rename the folder `path` to `path-<suffix>` (never a delete) and return the new path."""
        target = f"{path}-{suffix}"
        n = 1
        while self.exists(target):
            n += 1
            target = f"{path}-{suffix}-{n}"
        self.fs.move(path, target)
        return target
