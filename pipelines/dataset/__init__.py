"""What every dataset job shares: the shard writer, stats and the manifest commit (``writer``),
the colour tables and pairing rule (``colors``), the split rule (``splits``)."""
