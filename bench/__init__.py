"""Dockyard's benchmark suite (issue 6): Dockyard behind its operator-rendered nginx, side by side with CNCF
Distribution behind nginx `auth_basic`, on loopback, alternating targets run by run.

Run it as `python -m bench` (what `make bench` does). Modules:
- `prereqs`: finds or installs what the run needs (Debian packages, distribution v3 from the tools cache);
- `procs`: CPU seconds and resident memory from /proc of the child processes (`tests/support/procs`);
- `tlsfiles`: the throwaway CA and server certificate every nginx serves with;
- `servers`: the targets (Dockyard, Distribution 2.8.2, Distribution v3, nginx static files);
- `images`: OCI layouts with incompressible random layers, written without holding a layer in memory;
- `loads`: the workloads (skopeo push/pull, wrk request loops);
- `operator_load`: the operator against a real kube-apiserver (also `python -m bench.operator_load`);
- `report`: the table and the JSON results file.

Speed targets live here and never in timed tests.
"""
