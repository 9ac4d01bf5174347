"""What every job uses: the runner choice, error records and counters (``runner``), reading ahead
and atomic writes on any filesystem (``storage``), image checks and PNG encoding (``images``),
GeoTIFF windows and COGs (``rasters``), class colours and overlays (``palette``)."""
