"""Density stage: RACE kernel-density sketches, the exact kernel sums they are checked against, and k-means clusters."""
