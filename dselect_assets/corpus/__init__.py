"""dselect's default corpus: pinned source archives (archives), their texts (sources), and
the deterministic build of shards, high-quality set, judge probe and manifest (build).
`technical` is the earlier, optional technical-reference corpus built from Debian's
dictd databases."""
