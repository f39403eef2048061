"""Scoring stage: per-document model signals (Ask-LLM judge, perplexity, embeddings), the judge's evaluation and distillation."""
