"""Fixtures shared by the test modules.

- No test prepares data into the user's cache: `ODYSSEY_DATA_DIR` points at a folder of the
  session for every test (and every worker a test starts).
- Nothing leaves the machine: some test modules import MLflow or Ray directly, before
  `study.tracking` / `study.scheduler` could turn their telemetry off (importing `study` sets no
  environment variables), so the defaults are set here.
- The smoke study's data (12 real JSB chorales) is prepared once per session; `smoke` makes smoke
  study configs over it, so whole-study tests differ only in what they override.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _triton_for_the_interpreter() -> None:
    """Triton decides between compiling and interpreting its kernels when it is first imported,
    and other modules (torch among them) may import it before tests/test_triton.py can ask for
    its interpreter. Without CUDA, import it here with the interpreter asked for, then give the
    variable back (tests/test_triton.py sets it again while its own tests run)."""
    import sys

    import torch

    if torch.cuda.is_available() or "triton" in sys.modules:
        return
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401
    except ImportError:
        return
    finally:
        if before is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = before
    os.environ["ODYSSEY_TRITON_INTERPRETED"] = "1"  # tests/test_triton.py: the kernels can run


_triton_for_the_interpreter()


@pytest.fixture(autouse=True)
def _screen_handler_removed():
    """cli.main puts a screen handler on the root logger, bound to this test's captured
    stderr: taken off again after the test."""
    import logging

    yield
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == "odyssey-screen"]:
        root.removeHandler(h)


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ODYSSEY_DATA_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def smoke_data(data_cache) -> Path:
    """The data folder holding the smoke preset's prepared data."""
    from study import config
    from study.setup import prepare_data

    prepare_data(config.resolve("smoke", {"data_dir": str(data_cache)}))
    return data_cache


@pytest.fixture
def smoke(tmp_path, smoke_data):
    """`smoke(where=None, pack=1, **overrides)`: the smoke study's config with its results in
    `<where or tmp_path>/res` and the session's prepared data; one trial per job unless `pack` says
    otherwise (the per-trial functions tests inject run only then). A test that points a task at
    its own files (`data={task: {"path": ...}}`) passes its own `data_dir` too, so it never
    replaces the shared data."""
    from study import config

    def make(where: Path | None = None, *, pack: int = 1, **over):
        values = {
            "results": str(Path(where or tmp_path) / "res"),
            "data_dir": str(smoke_data),
            "training.pack": pack,
            **over,
        }
        return config.resolve("smoke", values)

    return make
