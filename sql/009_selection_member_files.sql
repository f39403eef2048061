-- A selection's members leave the catalogue: they are the content_hash column of its Parquet export
-- (selections.export_path), one file per selection, read with read_parquet. With a primary key on
-- (selection_id, content_hash) this table held every member of every selection in the catalogue and
-- its index in memory, the largest table at 10M documents. The Python step of this migration
-- (store/migrate_files.py) has checked that each selection's export lists exactly its members rows.
DROP TABLE IF EXISTS selection_members;
