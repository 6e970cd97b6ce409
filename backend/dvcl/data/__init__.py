"""Splits and the preprocessed cache that training reads."""
