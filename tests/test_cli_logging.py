"""The screen shows our own log lines in one format; while a study runs, everything third-party
(loggers, prints of Ray's workers, C++ output on file descriptor 2) goes to the study's
log file, and one line on the screen says how much went there."""

from __future__ import annotations

import logging
import os
import sys

from study import console, results


def test_third_party_output_goes_to_the_log_file(tmp_path, capfd):
    console.setup_logging(verbose=False)
    log = tmp_path / "study" / results.RUN_LOG
    with console.noise_to_file(log):
        logging.getLogger("study.runner").info("ours %d", 1)
        logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables")
        # a library that sets up its own handler meanwhile (as Ray does on import)
        ray_log = logging.getLogger("ray.fake")
        ray_log.propagate = False
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s\t%(levelname)s %(message)s"))
        ray_log.addHandler(handler)
        ray_log.warning("Token authentication is enabled for this Ray cluster.")
        print("(pid=9257) Fatal Python error: Aborted")  # a worker's output, forwarded
        print("[mutex.cc : 452] RAW: Lock blocking", file=sys.stderr)
        sys.stderr.flush()
        os.write(2, b"E core_worker.cc: SIGABRT received\n")  # C++ output, below Python
        logging.getLogger("study.progress").info("ours %d", 2)
    logging.getLogger("study.runner").info("after")
    out, err = capfd.readouterr()
    screen = out + err
    lines = [line for line in screen.splitlines() if line.strip()]
    assert [line.split(" ", 1)[1] for line in lines] == [
        "INFO study.runner: ours 1",
        "INFO study.progress: ours 2",
        f"INFO odyssey: Ray, MLflow and the workers wrote 5 lines to {log} (warnings or errors: 3)",
        "INFO study.runner: after",
    ]
    text = log.read_text()
    for s in (
        "INFO study.runner: ours 1",
        "INFO mlflow.store.db.utils: Creating initial MLflow database tables",
        "Token authentication is enabled",
        "Fatal Python error",
        "RAW: Lock blocking",
        "SIGABRT received",
    ):
        assert s in text
    assert console.third_party_lines(log) == (5, 3)


def test_outside_a_study_third_party_warnings_still_show(capfd):
    console.setup_logging(verbose=False)
    logging.getLogger("urllib3").info("chatter")
    logging.getLogger("urllib3").warning("something is off")
    logging.getLogger("study.x").info("ours")
    err = capfd.readouterr().err
    assert "chatter" not in err
    assert "WARNING urllib3: something is off" in err and "INFO study.x: ours" in err
