-- `documents` leaves the catalogue: a shard's documents are the rows of its documents file
-- (`shards.documents_file`, Parquet written by ingest), which held every column of this table
-- already. The view `documents` (same columns) reads those files; store/corpus.py redefines it in
-- each transaction that changes a shard's file, so the catalogue no longer holds a second
-- copy of every row. The Python step of this migration (store/migrate_files.py)
-- has checked that each shard's file holds exactly its rows, and defines the view after this.
DROP TABLE documents;
