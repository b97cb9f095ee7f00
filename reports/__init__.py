"""Fleet review: many result files read back as pandas tables."""
