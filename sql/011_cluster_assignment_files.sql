-- A clustering's assignments leave the catalogue: one corpus-wide attribute file per clustering
-- (attributes/<clustering id>/.all/values.parquet: hash, cluster, distance), written shard by
-- shard, named current by resource_producers row 'clusters'. As a table keyed by 64-hex strings
-- under a primary key it held the whole corpus and its index in memory (5.3 GB of the clusters
-- step's peak at 10M documents). The Python step (store/migrate_files.py) has written the files.
DROP TABLE IF EXISTS cluster_assignments;
