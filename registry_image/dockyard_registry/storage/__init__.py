"""Storage drivers: the narrow interfaces the store needs, and their implementations.

`base.Driver` is the synchronous contract the store runs on (in worker threads):
`filesystem.FilesystemDriver`, `memory.MemoryDriver` for fast tests, and `blocking.BlockingS3Driver`, a
facade of the async S3 driver whose client runs on its own event loop thread. `base.ObjectDriver` is the
async contract in the shape of Distribution's StorageDriver (issue 14): `filesystem.AsyncFilesystemDriver`,
`memory.AsyncMemoryDriver` and `s3.S3Driver`. Each contract has one suite run over all its drivers
(tests/registry/test_storage_contract.py); the store on S3 has its own (tests/registry/test_store_s3.py).
"""
