"""Dockyard operator: reconciles `PrivateRegistry` (dockyard.dev/v1alpha1) into a private OCI registry.

Layers (see each module's docstring): `handlers` (kopf wiring) → `reconcile` (the one orchestrator) →
`policies`/`builders`/`crypto`/`conditions` (pure) and `kube` (the only API I/O). `model` is the API and the
source of the CRD that `crd` generates.
"""
