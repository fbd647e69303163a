"""How variants are compared: study config, search spaces, the training loop, scheduling on Ray,
the Optuna record, MLflow tracking, the results table and the report builder.

The only package that imports ray, optuna or mlflow, each in its own modules; the training loop
(`study.train`) imports none of them.
"""

import os as _os

# Nothing leaves the machine: MLflow 3 sends usage telemetry by default, and Ray usage stats (the
# scheduler turns those off too). A user can still opt in by setting the variables themselves.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
