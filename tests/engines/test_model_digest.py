"""The .pt2 gate: only archives whose sha256 is listed next to them are ever unpickled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engines.errors import ModelLoadError
from engines.model_digest import DIGEST_FILE, check_listed, read_digests, write_digests


def test_listed_file_passes_changed_or_unlisted_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt2", tmp_path / "b.pt2"
    a.write_bytes(b"archive a")
    b.write_bytes(b"archive b")
    write_digests([a])
    check_listed(a)
    with pytest.raises(ModelLoadError, match="not listed in .*SHA256SUMS"):
        check_listed(b)
    write_digests([b])  # adds, keeps a
    assert set(read_digests(tmp_path)) == {"a.pt2", "b.pt2"}
    check_listed(b)
    a.write_bytes(b"archive a, tampered")
    with pytest.raises(ModelLoadError, match="the file changed after export") as e:
        check_listed(a)
    assert "\n" not in str(e.value)


def test_sha256sum_format_and_malformed_lines(tmp_path: Path) -> None:
    import hashlib

    f = tmp_path / "m.pt2"
    f.write_bytes(b"x")
    write_digests([f])
    text = (tmp_path / DIGEST_FILE).read_text()
    assert text == f"{hashlib.sha256(b'x').hexdigest()}  m.pt2\n"  # what `sha256sum -c` reads
    (tmp_path / DIGEST_FILE).write_text("not a digest line\n")
    with pytest.raises(ModelLoadError, match=r"SHA256SUMS:1: expected"):
        check_listed(f)


def test_write_digests_needs_one_folder(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "x" / "b").write_bytes(b"2")
    with pytest.raises(ValueError, match="share one folder"):
        write_digests([tmp_path / "a", tmp_path / "x" / "b"])


def test_torch_engine_refuses_an_unlisted_or_changed_pt2(generator_model: Any, tmp_path: Path) -> None:
    """The real backend: the digest is checked before torch unpickles anything."""
    import shutil

    pytest.importorskip("torch")
    from engines.torch_engine import TorchEngine

    onnx, pt2 = tmp_path / "generator.onnx", tmp_path / "generator.pt2"
    shutil.copy(generator_model.onnx, onnx)
    shutil.copy(generator_model.pt2, pt2)  # a .pt2 on its own, as if downloaded: no SHA256SUMS
    with pytest.raises(ModelLoadError, match="refusing to load: its sha256 is not listed"):
        TorchEngine(onnx)
    write_digests([pt2])
    TorchEngine(onnx).close()  # listed: loads
    with pt2.open("ab") as f:
        f.write(b"\0")  # changed after export
    with pytest.raises(ModelLoadError, match="changed after export"):
        TorchEngine(onnx)


def test_shipped_pt2_files_are_listed() -> None:
    from engines.assets import models_dir

    shipped = sorted((models_dir() / "small").glob("*.pt2"))
    assert {p.name for p in shipped} >= {"detector.pt2", "generator.pt2"}
    for p in shipped:
        check_listed(p)
