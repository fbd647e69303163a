"""How variants are compared: study config, search spaces, the training loop, scheduling on Ray,
the Optuna record, MLflow tracking, the results table and the report builder.

The only package that imports ray, optuna or mlflow, each in its own modules; the training loop
(`study.train`) imports none of them. Importing it changes nothing in the environment: the
modules that import MLflow (`study.tracking`) and Ray (`study.scheduler`) turn off MLflow's
telemetry and Ray's usage stats just before, unless the user set those variables.
"""
