-- Scores and embeddings leave the catalogue for attribute files (dselect_assets/store/attributes.py):
-- one Parquet file per (producer, shard) chunk, keyed by the first 16 bytes of the content hash,
-- queried with read_parquet. The Python step of this migration (store/migrate_files.py) has
-- already written every row of these tables to such files when this runs.
DROP TABLE IF EXISTS scores;
DROP TABLE IF EXISTS embedding_index;
