"""The Spark training engine: the same cleaning rules, models and model files as the local
trainer, computed on a Spark cluster (or Spark's local mode) for logs one machine cannot hold.

Optional: ``pip install .[spark]``. Nothing outside this package imports it, so the local
engine and the server never load pyspark.
"""
