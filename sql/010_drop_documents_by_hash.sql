-- DuckDB answers every join on content_hash with a hash join and never reads this index, while
-- each commit that inserts a shard rewrites it whole: measured on a 5M-document catalogue, a
-- 100k-document shard's commit took 3.1 s with it and 1.0 s without, so ingesting a corpus shard
-- by shard grew with the square of its size. The primary keys keep (shard, row_number) and each
-- text in `contents` unique.
DROP INDEX IF EXISTS documents_by_hash;
