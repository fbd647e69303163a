"""Where a study cannot write: an unusable `--results` (a file, a path under one, a read-only
mount, a full disk), a read-only study under `doctor`, a disk that fills at the first start or
mid-run, and names that are not UTF-8. Each is one line on the screen, written before anything
else is (no folder left by a refused start), and the study resumes once the cause is gone.
Read-only and full disks are real tmpfs mounts (the tests skip where mounting is not allowed);
`doctor` on a read-only study is in test_damage.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from odyssey import cli
from study import results, runner
from study.scheduler import InlineExecutor
from study.worker import run_trial

pytestmark = pytest.mark.integration  # whole studies


@pytest.fixture
def mount(tmp_path):
    """`mount(name, options)`: a tmpfs at tmp_path/name; unmounted after the test."""
    done = []

    def make(name: str, options: str):
        where = tmp_path / name
        where.mkdir(exist_ok=True)
        cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        done.append(where)
        return where

    yield make
    for where in reversed(done):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(where, leave: int = 0) -> None:
    """Fill the file system holding `where` up to `leave` bytes free."""
    with open(where / "filler", "wb") as f:
        while True:
            st = os.statvfs(where)
            room = st.f_bavail * st.f_frsize - leave
            if room <= 0:
                break
            try:
                f.write(b"\0" * min(room, 1 << 20))
                f.flush()
            except OSError:
                break


@pytest.fixture
def odyssey(monkeypatch, smoke_data, capfd):
    """`odyssey(*argv)` -> (rc, screen): the CLI with the in-process executor instead of Ray
    (`fn` runs each trial), and what it showed on the terminal's stderr."""

    def call(*argv, fn=run_trial):
        monkeypatch.setattr(runner, "_ray_executor", lambda c, d: InlineExecutor(fn))
        rc = cli.main(list(argv))
        return rc, capfd.readouterr().err

    return call


def _run_args(res, smoke_data):
    return ("run", "smoke", "--results", str(res), "--data-dir", str(smoke_data), "--no-live")


def _one_line(screen: str, *words: str) -> None:
    errors = [line for line in screen.splitlines() if ": error: " in line]
    assert len(errors) == 1, screen
    assert "Traceback" not in screen and "CREATE TABLE" not in screen
    for w in words:
        assert w in errors[0], errors[0]


def test_unusable_results_folders(tmp_path, mount, odyssey, smoke_data):
    (tmp_path / "file").write_text("x")
    for res in (tmp_path / "file", tmp_path / "file" / "under"):
        rc, screen = odyssey(*_run_args(res, smoke_data))
        _one_line(screen, "--results: ", "/file is a file, not a folder")
        assert rc == 2
    ro = mount("ro", "ro,size=1m")
    rc, screen = odyssey(*_run_args(ro, smoke_data))
    _one_line(screen, f"cannot create the study folder {ro}/smoke", "(Read-only file system)")
    full = mount("full", "size=64k")
    _fill(full)
    rc, screen = odyssey(*_run_args(full, smoke_data))
    _one_line(screen, "no space left on the device holding", "run the same command again")
    assert rc == 2 and sorted(p.name for p in full.iterdir()) == ["filler"]  # nothing written


def test_a_disk_full_at_the_first_start(mount, odyssey, smoke_data):
    where = mount("disk", "size=16m")
    _fill(where, leave=24 * 1024)
    rc, screen = odyssey(*_run_args(where / "res", smoke_data), "--variants", "V", "--trials", "1")
    _one_line(screen, "no space left on the device: could not write", "with the same command")
    assert rc == 2
    (where / "filler").unlink()
    rc, screen = odyssey(*_run_args(where / "res", smoke_data), "--variants", "V", "--trials", "1")
    assert rc == 0, screen
    assert len(results.read_trials(where / "res" / "smoke")) == 1


def test_a_disk_full_mid_run_stops_with_one_line_and_resumes(mount, odyssey, smoke_data):
    where = mount("disk", "size=64m")
    args = (
        *_run_args(where / "res", smoke_data),
        "--variants",
        "V,NP",
        "--trials",
        "2",
        "--pack",
        "1",
    )
    jobs = []

    def fills_the_disk_at_the_third(job):
        jobs.append(job)
        if len(jobs) == 3:
            _fill(where)
        return run_trial(job)

    rc, screen = odyssey(*args, fn=fills_the_disk_at_the_third)
    _one_line(screen, "no space left on the device: could not write", "with the same command")
    assert rc == 2 and len(results.read_trials(where / "res" / "smoke")) == 2
    (where / "filler").unlink()
    again = []
    rc, screen = odyssey(*args, fn=lambda job: again.append(job) or run_trial(job))
    assert rc == 0, screen
    assert len(again) == 2  # the two not recorded: nothing twice, nothing lost
    df = results.read_trials(where / "res" / "smoke")
    assert len(df) == 4 and not df.duplicated(list(results.KEY)).any()


@pytest.mark.parametrize("flag", ["--data-dir", "--study", "spec"])
def test_a_name_that_is_not_utf8_is_one_line_before_anything_starts(
    tmp_path, odyssey, smoke_data, flag
):
    odd = os.fsdecode(bytes(tmp_path) + b"/d\xfe")
    res = tmp_path / "res"
    if flag == "spec":
        spec = odd + ".yaml"
        with open(os.fsencode(spec), "w") as f:
            f.write("preset: smoke\n")
        argv = ["run", spec, "--results", str(res), "--data-dir", str(smoke_data)]
        says = ["spec file name", "byte 0xfe"]
    else:
        argv = list(_run_args(res, smoke_data))
        argv += [flag, odd if flag == "--data-dir" else "s" + os.fsdecode(b"\xff")]
        says = [f"{flag} ", "is not UTF-8 (byte 0x" + ("fe" if flag == "--data-dir" else "ff")]
    rc, screen = odyssey(*argv)
    _one_line(screen, *says)
    assert rc == 2 and not res.exists()  # a refused start leaves no folder
