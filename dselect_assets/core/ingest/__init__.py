"""Ingest stage: corpus shard files read into validated documents, and the shard keys that name them."""
