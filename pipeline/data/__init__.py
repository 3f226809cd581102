"""Data: video sources to per-video shards and Parquet manifests, splits, frame access and
per-frame views (``docs/methods.md`` §1-3)."""
