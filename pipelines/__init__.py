"""Beam jobs: dataset conversion (COCO, image+mask pairs) and batch segmentation."""
import os as _os


def _skip_credential_lookup_for_emulator():
    """With STORAGE_EMULATOR_HOST set, google-cloud-storage talks to a local emulator and sends
    no credentials. Beam would still look for Application Default Credentials first, retrying
    with backoff for ~20 s per process on a machine that has none; tell it there are none."""
    if not _os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    try:
        from apache_beam.internal.gcp import auth
        with auth._Credentials._credentials_lock:
            auth._Credentials._credentials = None
            auth._Credentials._credentials_init = True
    except (ImportError, AttributeError):  # another Beam version: it just costs the lookup
        pass


_skip_credential_lookup_for_emulator()
