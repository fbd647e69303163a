"""An example lstm-odyssey plug-in package: a cell (the minimal gated unit) and a task (recall).

lstm-odyssey finds these three ways: by import path in a study file
(`{name: MGU, cell: "mylab.cells:MGU"}`, `{name: recall, task: "mylab.tasks:RECALL"}`), through the
dicts below (`plugins: [mylab]` in a study file, then `MGU` and `recall` by name), or, once the
package is installed (`pip install examples/plugin`), through its entry points (pyproject.toml).
"""

from mylab.cells import MGU
from mylab.tasks import RECALL

__version__ = "0.1.0"

VARIANTS = {"MGU": MGU}
TASKS = {"recall": RECALL}
