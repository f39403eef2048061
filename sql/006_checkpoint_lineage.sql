-- A checkpoint names everything it was trained from, so evaluation and the report never pair
-- it with a newer selection or tokenizer: its training seed, its own (content-addressed)
-- tokenizer file, and how many epochs over its selection the token budget made.
ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS seed BIGINT;
ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS tokenizer_path VARCHAR;
ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS tokenizer_sha256 VARCHAR;
ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS epochs DOUBLE;
ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS documents BIGINT;
