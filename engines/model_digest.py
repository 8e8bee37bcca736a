"""Which ``.pt2`` archives may be loaded: those whose sha256 is listed in ``SHA256SUMS`` next to them.

A ``.pt2`` (``torch.export.save``) is a zip whose weights and constants torch reads back with its
unpickler; torch's own documentation says never to load one from an untrusted source, since a crafted
archive can run code. The ONNX files are parsed as protobuf and carry no such risk, so only the
``.pt2`` are gated: ``training.export`` writes ``SHA256SUMS`` (the coreutils ``sha256sum`` format,
checkable with ``sha256sum -c``) beside the files it exports, and the torch backends refuse any
``.pt2`` whose digest is not listed there. A ``.pt2`` swapped in, downloaded on its own or modified
after export is refused with one line instead of being unpickled.

What this does not do: it cannot vouch for a whole model folder received from someone else (that
folder's ``SHA256SUMS`` is theirs); check such a folder's digests against its publisher's, or use the
ONNX Runtime backend, which never unpickles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from engines.errors import ModelLoadError
from engines.metadata import sha256_file

DIGEST_FILE: Final = "SHA256SUMS"
_LINE = re.compile(r"^(?P<digest>[0-9a-f]{64}) [ *](?P<name>.+)$")


def read_digests(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` from ``folder/SHA256SUMS`` (empty when the file is missing).

    A malformed line is an error, not skipped: a digest list that is only partly read would refuse
    files for a reason nobody could see.
    """
    path = folder / DIGEST_FILE
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise ModelLoadError(f"{path}:{n}: expected '<64 hex digits>  <file name>', got {line[:80]!r}")
        out[m.group("name")] = m.group("digest")
    return out


def write_digests(files: Iterable[Path]) -> Path:
    """Add (or replace) the sha256 of each of ``files`` in the ``SHA256SUMS`` of their folder.

    All files must share one folder; entries for other files already listed are kept.
    """
    paths = [Path(f) for f in files]
    folders = {p.parent.resolve() for p in paths}
    if len(folders) != 1:
        raise ValueError(f"files must share one folder, got {sorted(str(f) for f in folders)}")
    folder = paths[0].parent
    digests = read_digests(folder)
    for p in paths:
        digests[p.name] = sha256_file(p)
    target = folder / DIGEST_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text("".join(f"{d}  {name}\n" for name, d in sorted(digests.items())), encoding="utf-8")
    tmp.replace(target)  # atomic: a reader never sees half a list
    return target


def check_listed(path: Path) -> None:
    """Return if ``path``'s sha256 is the one listed for it in its folder's ``SHA256SUMS``, else raise
    :class:`ModelLoadError` (one line, saying what to do)."""
    listed = read_digests(path.parent).get(path.name)
    where = path.parent / DIGEST_FILE
    why = (
        "a .pt2 is unpickled by torch and could run code; re-export it with training.export, or use "
        "--backend onnxruntime"
    )
    if listed is None:
        raise ModelLoadError(f"{path}: refusing to load: its sha256 is not listed in {where} ({why})")
    actual = sha256_file(path)
    if actual != listed:
        raise ModelLoadError(
            f"{path}: refusing to load: sha256 {actual[:12]}... differs from {listed[:12]}... listed in "
            f"{where}, the file changed after export ({why})"
        )
