"""The demo's generated world: scenes, their COCO annotations and a GeoTIFF mosaic (``scenes``)."""
