"""Where the weights come from, and getting them into memory fast.

`sources` (a local folder, a Hugging Face id in the local cache, or `s3://`), `s3` and `fetch`
(a parallel, verified, resumable download into the cache), `integrity` (the manifest and
checksums), `cache` (the on-disk cache: locks, snapshots, free space), `pagecache` (reading
weight files into the page cache while the imports run), `progress` (byte counts and rates).

May import: the standard library, `runtime.settings`, `runtime.errors`, `runtime.clock`,
`runtime.collector` and `runtime.observe`; boto3 only inside functions. Never the lifecycle.
"""
