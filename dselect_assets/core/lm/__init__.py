"""LM stage: the tiny LM and its tokenizer, trained on a selection, evaluated, scored with, and compared in the report."""
