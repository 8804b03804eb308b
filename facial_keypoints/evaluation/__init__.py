"""Metrics (NME, failure rate, CED AUC) and the evaluation protocols."""
