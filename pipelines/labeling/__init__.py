"""The labeling loop's pieces: one round of it run where the truth is known (``loop``)."""
