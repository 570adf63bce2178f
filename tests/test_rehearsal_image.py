"""The rehearsal image's build (tests/rehearsal_image.py) fails cleanly: too little disk is one
clear error before anything is downloaded, and a failed install leaves no half-built image."""
from __future__ import annotations

import shutil
import sys
from collections import namedtuple

import pytest

import rehearsal_image
from harness import interpreters

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def envs(tmp_path, monkeypatch):
    monkeypatch.setenv("ROSETTA_ENVS_DIR", str(tmp_path / "envs"))
    monkeypatch.setattr(interpreters, "find_python", lambda version: sys.executable)
    monkeypatch.setattr(rehearsal_image, "_failed", [])
    return tmp_path / "envs"


def test_too_little_disk_is_one_error_naming_the_folder_and_the_space(envs, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda where: Usage(100 * 2**30, 97 * 2**30, 3 * 2**30))
    with pytest.raises(rehearsal_image.ImageError) as caught:
        rehearsal_image.ensure(log=lambda *a: None)
    message = str(caught.value)
    assert str(envs) in message and "3.0 GiB free" in message and f"{rehearsal_image.NEED_GIB} GiB" in message
    assert "ROSETTA_ENVS_DIR" in message
    assert not rehearsal_image.path().exists()


def test_a_failed_install_removes_the_partial_image(envs, monkeypatch, tmp_path):
    spec = tmp_path / "spec.txt"
    spec.write_text("--no-index\nno-such-package-for-the-rehearsal==1.0\n")
    monkeypatch.setattr(rehearsal_image, "SPEC", spec)
    monkeypatch.setattr(shutil, "disk_usage", lambda where: Usage(100 * 2**30, 50 * 2**30, 50 * 2**30))
    with pytest.raises(rehearsal_image.ImageError) as caught:
        rehearsal_image.ensure(log=lambda *a: None)
    assert "was removed" in str(caught.value) and "no-such-package-for-the-rehearsal" in str(caught.value)
    assert envs.is_dir() and not rehearsal_image.path().exists()
    # The failure is remembered: a second test asking for the image gets the same error at once.
    with pytest.raises(rehearsal_image.ImageError, match="was removed"):
        rehearsal_image.ensure(log=lambda *a: None)
