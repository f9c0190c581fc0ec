"""Node trust: every node's container runtimes trust each registry's CA, with no SSH and no restarts.

The pieces, from the operator to the node:
- `layout` (pure): the shared vocabulary of both sides: how a registry host is written as a ConfigMap key
  (`:` as `..`, the OpenShift convention), where each runtime looks for a host's CA, what `hosts.toml` says,
  the marker file, CA fingerprints and the per-node report format;
- `aggregate` (pure): every `PrivateRegistry` with `nodeTrust.enabled` → the data of the one ConfigMap;
- `rotation` (pure): the staged CA rotation policy (publish beside the old → switch → retire);
- `builders` (pure): the ConfigMap, the DaemonSet and the agent's small RBAC as manifest dicts;
- `agent` (I/O, runs on every node): the DaemonSet's process: mounted ConfigMap → files under the host
  root, and a report of the installed CA fingerprints on its own Pod.

Must not: import kopf here or in any pure module; only `agent` touches files or the API.
"""
