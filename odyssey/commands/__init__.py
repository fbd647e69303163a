"""One module per command group of the `odyssey` CLI; each exposes `register(subparsers)`.

Handlers import their heavy dependencies (torch, ray, optuna, mlflow) inside the function, so that
`odyssey --help` stays instant.
"""
