"""Nothing leaves the machine while the tests run: some test modules import MLflow or Ray
directly, before `study.tracking` / `study.scheduler` could turn their telemetry off (importing
`study` sets no environment variables)."""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
