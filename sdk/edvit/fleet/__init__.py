"""An emulated fleet of edge devices on one Linux machine (issue 29), for the Ray backend.

:class:`Fleet` (:mod:`.core`) runs one Ray node per device of a devices.yaml, each in its
own network namespace with a shaped link (:mod:`.network`), a CPU quota and a memory
limit (:mod:`.cgroups`), around a head in the root namespace (:mod:`.nodes`), and tears
all of it down on exit; :mod:`.sweep` removes what a killed run left; :mod:`.serve` is
``edgevit fleet``; :mod:`.baseline` runs a plan's unsplit model on one device. Needs Linux
and root (:func:`.host.check_host`). Torch-free.

```python
from edgevit.edvit.fleet import fleet
with fleet("devices.yaml") as f:
    result = run_plan("plan/", x, backend="ray", address=f.address)
```
"""

from .baseline import unsplit_plan
from .core import NODE_MEMORY_MB, Fleet, fleet
from .host import FleetError, FleetUnavailable, check_host
from .sweep import cleanup, leftovers

__all__ = ["NODE_MEMORY_MB", "Fleet", "FleetError", "FleetUnavailable", "check_host", "cleanup", "fleet",
           "leftovers", "unsplit_plan"]
