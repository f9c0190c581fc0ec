"""Node trust: every node's container runtimes trust each registry's CA, with no SSH and no restarts.

The pieces, from the operator to the node:
- `layout` (pure): the shared vocabulary of both sides: how a registry host is written as a ConfigMap key
  (`:` as `..`, the OpenShift convention), where each runtime looks for a host's CA, what `hosts.toml` says,
  the marker file, CA fingerprints and the per-node report format;
- `claims` (pure): which hosts a registry may have nodes trust its CA for (names it serves or the installer
  allows; never a public registry's host or another namespace's Service name);
- `aggregate` (pure): every `PrivateRegistry` with `nodeTrust.enabled` → the data of the one ConfigMap, a
  host claimed twice going to the registry that holds it, else to the oldest;
- `rotation` (pure): the staged CA rotation policy (publish beside the old → switch → retire);
- `builders` (pure): the ConfigMap, the DaemonSet, the agent's small RBAC (shipped by the chart) and a
  registry's staged next-CA Secret as manifest dicts;
- `sources` (pure): a registry's `Source` (what a reconcile pass hands in) and the `Observation` of a
  publication (what a pass reads back: hosts, fingerprints on nodes, rotation plan, NodeTrustReady);
- `publication` (pure): what one publication contains: the ConfigMap's data, each host's owner, and every
  registry's view, from all sources, the nodes and the hosts' owners as last published;
- `controller` (I/O through `kube.Kube`): the one publisher task: keeps every registry's source, observes the
  agents' reports, publishes the ConfigMap and DaemonSet, and tells the reconciler which registries' view
  changed (their status follows);
- `hostfiles` (I/O on the node's files): the `Installer`, which keeps each runtime's certs.d entries (and
  mirror wiring) under the host root equal to the ConfigMap;
- `agent` (I/O, runs on every node): the DaemonSet's process: mounted ConfigMap → `hostfiles`, and a report
  of the installed CA fingerprints on its own Pod.

Must not: import kopf anywhere, or lightkube (the API is reached through `kube.Kube` only); only
`controller`, `hostfiles` and `agent` do I/O.
"""
