"""Storage drivers: the narrow interface the store needs, and its implementations.

`base.Driver` is the contract; `filesystem.FilesystemDriver` is what runs in production and
`memory.MemoryDriver` backs fast tests. Both pass one contract suite
(tests/registry/test_storage_contract.py).
"""
