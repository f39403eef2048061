-- The first 64 bits of each text's content hash as an integer, for the one lookup every ingest
-- makes: which of a shard's texts `contents` already lists. As a semi join on the 64-hex strings
-- it read every text of the corpus, 0.6-0.9 s a shard at 10M documents (the part of ingest that
-- grew with the corpus); on this column, 0.06 s. A key two texts share only widens that lookup:
-- store/corpus.py re-derives the owners of every text it returns, which leaves a text it did not
-- need unchanged. A hash that is not 64 hex gets key 0.
ALTER TABLE contents ADD COLUMN hash_key UBIGINT;
UPDATE contents SET hash_key = coalesce(TRY_CAST('0x' || left(content_hash, 16) AS UBIGINT), 0);
