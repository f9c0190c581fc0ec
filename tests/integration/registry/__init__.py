"""The registry proven with real clients: the real `dockyard-registry` process, real tools, real TLS.

Helpers (no tests in them):
- `harness.py`: start/stop `dockyard-registry serve` by PID, create users with its CLI, an HTTPS
  client that verifies the CA, raw steps (monolithic push, half-sent requests for crash tests);
- `images.py`: OCI images and indexes built in Python (random gzip'd tar layers) as OCI layouts;
- `clients.py`: skopeo and Docker CLI command lines; `conformance.py`: the OCI conformance runner;
- `certs.py`: a test CA for the few registries that need a certificate for a non-loopback address.

Run: `make test`, or just this package (the Go tools must be built):
    DOCKYARD_TOOLS_BIN=$(bash hack/tools.sh) .venv/bin/pytest -q -ra tests/integration/registry
"""
