"""Batch segmentation's pieces: chunks and their pixels (``chunks``), the RunInference model
handler (``inference``), what it writes (``outputs``)."""
