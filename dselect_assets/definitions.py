"""The one Definitions object: assets, checks, jobs, sensors, schedules and resources."""

from __future__ import annotations

import dagster as dg

from dselect_assets.assets import corpus
from dselect_assets.resources import DataPaths, DuckDBStore

shard_assets = [corpus.documents]

shard_job = dg.define_asset_job(
    "shard_job",
    selection=dg.AssetSelection.assets(*shard_assets),
    description="Everything computed per corpus shard: ingest, embed, score, sketch.",
)

defs = dg.Definitions(
    assets=[*shard_assets],
    jobs=[shard_job],
    sensors=[corpus.build_corpus_sensor(shard_job)],
    resources={"paths": DataPaths(), "store": DuckDBStore()},
)
