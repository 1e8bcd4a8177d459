"""Answering requests from a loaded model bundle, in parts a request goes through in order:

- ``catalog``: the items with their names, prices, categories and availability, and the
  business filters as one boolean mask over the catalog (plus per-category diversity);
- ``ranking``: candidates and their scores (the personal item-to-item matrix, ALS, trending,
  blended as training measured them), the top k under the mask, the trending top-up, and
  which of a shopper's items led to each result;
- ``service``: one object per model version, mapping external ids at the edges and putting
  the parts together for each kind of request; ``holder`` swaps versions as they are promoted.

Response shaping (names, prices, reasons, groups as JSON) is ``server.responses``. Nothing
here imports pandas or knows of HTTP.
"""
