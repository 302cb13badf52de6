"""The live stripchart: a FastAPI server fed by multicast, and the page in ``web/``."""
