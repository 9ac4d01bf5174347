"""One setup.py for pip users and for Dataflow workers (``--setup_file ./setup.py``)."""
import setuptools

INSTALL_REQUIRES = [
    # Beam's [gcp] extra brings the gs:// filesystem and the Dataflow runner.
    "apache-beam[gcp]>=2.60,<3",
    "tensorflow>=2.16,<3",
    "keras>=3.3,<4",
    # Training logs; TensorFlow 2.21 no longer pulls it in.
    "tensorboard>=2.16,<3",
    "pycocotools>=2.0.7,<3",
    "pillow>=10.0,<14",
    "google-cloud-storage>=2.14,<4",
    # CRC-32C for the TFRecord framing (segformat.records); google-cloud-storage needs it too.
    "google-crc32c>=1.5,<2",
    "numpy>=1.26,<3",
    "rasterio>=1.3.9,<2",
    "matplotlib>=3.8,<4",
    # GEOS's polygon validity (OGC rules) for vector labels: a bow-tie or a self-touching ring is
    # an error record, in O(n log n) for a 20,000-vertex lake.
    "shapely>=2.0,<3",
    # Streams the 450 MB COCO train JSON instead of holding it parsed in memory (C backend).
    "ijson>=3.2,<4",
    # Intel ISA-L deflate for the mask PNGs: ~10x zlib's speed at level 1 with smaller output
    # (0.03 vs 0.34 ms per 640x480 mask); any zlib reader decodes it.
    "isal>=1.6,<2",
    # libjpeg-turbo with its warnings as errors: a JPEG whose coded data ends early passes
    # Pillow (which fills the rest grey) but stops TensorFlow's decoder in the trainer; the
    # dataset jobs check JPEGs with it (found by tests/test_fuzz.py).
    "simplejpeg>=1.7,<2",
    # STAC Items and a Collection for segmented GeoTIFFs (what GIS catalogues and maps load).
    "pystac>=1.10,<2",
    # GDAL's OGR for polygon layers: segpipe segment --vectors writes GeoPackage (GIS's default
    # format) and FlatGeobuf, segpipe dataset raster reads GeoPackage, Shapefile and other labels.
    "fiona>=1.9,<2",
]

setuptools.setup(
    name="segpipe",
    version="0.1.0",
    description="Semantic segmentation at scale: COCO/mask datasets -> FCN training -> batch segmentation on Beam",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["pipelines", "pipelines.*", "segcli", "segcli.*", "segformat",
                                               "segformat.*", "segmodel", "segmodel.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # kept for installs that name it: fiona is now installed with segpipe
        "vectors": [],
        # the CVAT auto-annotation function (pipelines.labeling.cvat_function) and the cvat-cli that runs it
        "cvat": ["cvat-sdk>=2.25,<3", "cvat-cli>=2.25,<3"],
        # segpipe export --format onnx
        "onnx": ["tf2onnx>=1.16,<2"],
        # selenium drives Debian's chromium/chromedriver for the report's browser test.
        # rio-cogeo: a real Cloud-Optimized GeoTIFF validator for the masks batch_segment writes.
        # pytest below 9.2: with 9.2 pytest-xdist's --dist loadgroup groups nothing (pytest-xdist
        # issue 1386) and the trained model of the tests would be trained on both workers
        # (tests/conftest.py fails when that happens).
        "test": ["pytest>=8,<9.2", "pytest-xdist>=3.5,<4", "gcp-storage-emulator>=2024.8.3", "selenium>=4.20,<5",
                 "rio-cogeo>=5,<8",
                 # fuzzing (tests/test_fuzz.py)
                 "hypothesis>=6.100,<7",
                 # Label Studio's own brush-RLE decoder checks the pre-labels segpipe review writes
                 "label-studio-sdk>=1.0,<3",
                 # CVAT's import engine reads the COCO 1.0 and Segmentation mask 1.1 batches back
                 "datumaro>=1.10,<2",
                 # the CVAT function run through cvat-sdk's and cvat-cli's own machinery
                 "cvat-sdk>=2.25,<3", "cvat-cli>=2.25,<3",
                 # the ONNX export, converted by tf2onnx and run by onnxruntime
                 "tf2onnx>=1.16,<2", "onnxruntime>=1.17,<2"],
    },
    entry_points={"console_scripts": ["segpipe=segcli.main:main"]},
)
