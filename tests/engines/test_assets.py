from __future__ import annotations

from pathlib import Path

import pytest

from engines import assets


def test_checkout_root_holds_models_and_demo_clip() -> None:
    root = Path(assets.__file__).resolve().parent.parent
    assert assets.data_root() == root
    assert (assets.models_dir() / "yunet").is_dir()
    assert assets.demo_clip().is_file()


def test_installed_share_folder_is_used_when_the_checkout_has_no_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share = tmp_path / "prefix" / assets.SHARE_SUBDIR
    (share / "models" / "yunet").mkdir(parents=True)
    monkeypatch.setattr(assets, "_candidates", lambda: [tmp_path / "site-packages", share])
    assert assets.data_root() == share
    assert assets.models_dir() == share / "models"


def test_missing_everywhere_falls_back_to_the_first_place_so_loading_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assets, "_candidates", lambda: [tmp_path / "a", tmp_path / "b"])
    assert assets.data_root() == tmp_path / "a"
