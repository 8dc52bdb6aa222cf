"""Prompt data: where rows come from and how they are read in chunks.

dataset   the readers (JSON array, JSONL, Parquet) behind one chunked Dataset
"""
