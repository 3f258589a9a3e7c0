"""1:N identification: the in-memory gallery index of a worker and the open-set rule that says "unknown"."""
