"""Code the operator and the registry share because it is the same thing in both: certificates and htpasswd.

`pki` builds and reads the CA and the serving certificate (the operator's SelfSigned mode, the registry's
`serve --tls auto`); `htpasswd` is the file both read and write. Must not: import `dockyard_operator` or
`dockyard_registry` (an import-linter contract), do I/O, or read the clock.
"""
