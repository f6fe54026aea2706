"""The paper's tables: train and score every method on one dataset, write results and figures."""
