"""dselect: choose LLM pretraining data with Ask-LLM and Density sampling, as Dagster assets."""

import os

# On small shared machines OpenMP's default busy-wait makes 2 torch threads many
# times slower than 1; passive waiting must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
