"""Keeping freed memory: set on Linux with glibc, skipped elsewhere, and applied by the command line."""

import ctypes
import platform

import pytest

from zsdistill import allocator, cli
from zsdistill.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="needs Linux with glibc")
def test_thresholds_set_on_glibc():
    assert keep_freed_memory()


class RecordingLibrary:
    """A stand-in for the C library that records mallopt's calls and accepts or rejects them."""

    def __init__(self, result: int):
        self.calls = []
        self.result = result

        def mallopt(parameter, value):
            self.calls.append((parameter, value))
            return self.result

        self.mallopt = mallopt


def test_mallopt_given_both_thresholds(monkeypatch):
    library = RecordingLibrary(result=1)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(ctypes, "CDLL", lambda name: library)
    assert keep_freed_memory()
    assert library.calls == [(-3, MMAP_THRESHOLD), (-1, TRIM_THRESHOLD)]


def test_rejected_threshold_returns_false(monkeypatch):
    library = RecordingLibrary(result=0)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(ctypes, "CDLL", lambda name: library)
    assert not keep_freed_memory()


@pytest.mark.parametrize(("system", "libc"), [("Darwin", ("", "")), ("Linux", ("musl", "1.2"))])
def test_other_systems_left_alone(monkeypatch, system, libc):
    def fail(name):
        raise AssertionError("the C library was loaded")

    monkeypatch.setattr(allocator.platform, "system", lambda: system)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: libc)
    monkeypatch.setattr(ctypes, "CDLL", fail)
    assert not keep_freed_memory()


def test_command_line_keeps_freed_memory(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    missing = tmp_path / "missing.txt"
    argv = ["teacher", "--data_file", str(missing), "--class_names_file", str(missing), "--output_dir", str(tmp_path)]
    status = cli.main(argv)
    assert status == 2
    assert calls == [True]
