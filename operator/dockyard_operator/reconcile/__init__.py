"""The reconcile loop of a `PrivateRegistry`: an orchestrator over an ordered list of steps.

- `orchestrator`: `Reconciler`, the pass as the list of what it does, plus scheduling, draining and deletion;
- `refresh`: what each registry's last pass settled, and the status refresh from it after node trust
  publishes;
- `context`: the immutable pass context and the typed results steps hand on (no step imports another);
- the steps, one module each: `credentials` (htpasswd, with the bcrypt cache), `tls` (CA choice and the
  serving certificate), `ca_rotation` (the staged rotation), `children` (everything the registry owns, through
  the child writer), `trust` (the hand-off to node trust), `exposure` (pull secrets, KEP-1755 hosting),
  `observe` (the registry's own report on storage and gc) and `status` (conditions and Events);
- `triggers`: when a registry gets a pass (its watch events, the one resync loop, retries after errors);
- `orphans`: the sweep, every resync round, of what registries deleted while no operator watched left behind.
Must not: import kopf; write to the API except through `writer.Writer` (and status/Events in `status`).
"""

from dockyard_operator.reconcile.context import ROTATE_CA
from dockyard_operator.reconcile.orchestrator import Reconciler, Result
from dockyard_operator.reconcile.triggers import Triggers

__all__ = ["ROTATE_CA", "Reconciler", "Result", "Triggers"]
