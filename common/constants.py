"""Numbers more than one package must agree on, defined once."""

# Label of a row that is not a real sample (evaluation padding, an image that failed to decode):
# the loss ignores it (cross_entropy ignore_index) and no metric counts it.
PAD_LABEL = -1

# Bootstrap resamples behind the test split's 95% intervals (balanced accuracy, macro AUC).
BOOTSTRAP_RESAMPLES = 1000
