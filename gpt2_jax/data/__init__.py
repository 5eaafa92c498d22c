"""Texts and labels: the tokenizer, tables of your own data, the SMS collection, batches."""
