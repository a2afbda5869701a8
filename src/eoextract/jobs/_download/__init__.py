"""Streamed, atomic and verified download of openEO batch job results.

The pieces, from the results document to files in place:

* :func:`parse_job_results` (``_document``) reads the job's results document (a STAC
  Item or a STAC Collection with ``item`` links) into :class:`RemoteAsset` records;
* :func:`download_asset` (``_transfer``) streams one asset to a temporary file, hashing
  while it writes, resuming with HTTP ``Range`` after a broken connection and checking
  size and checksum when the backend announced them, and stopping at the first byte beyond
  the announced size, ``max_asset_bytes`` or the free disk space;
* :func:`place_file` (``_disk``) moves a verified file to its final path, refusing any
  path that would leave the output folder;
* :func:`download_job_assets` (``_job_assets``) does all of the above for the assets of
  one job in parallel, and records what it placed (``_records``) so that a rerun skips
  verified files;
* :func:`session_for` (``_session``) takes the HTTP session and credentials of an
  ``openeo.Connection``.

Nothing here knows about STAC items beyond the results document: building items from the
downloaded files is the extraction's job.
"""

from eoextract.jobs._download._disk import STATE_DIR as STATE_DIR
from eoextract.jobs._download._disk import TEMP_PREFIX as TEMP_PREFIX
from eoextract.jobs._download._disk import place_file as place_file
from eoextract.jobs._download._disk import remove_stale_temp_files as remove_stale_temp_files
from eoextract.jobs._download._document import AssetDescription as AssetDescription
from eoextract.jobs._download._document import RemoteAsset as RemoteAsset
from eoextract.jobs._download._document import parse_job_results as parse_job_results
from eoextract.jobs._download._document import safe_relative_path as safe_relative_path
from eoextract.jobs._download._job_assets import download_job_assets as download_job_assets
from eoextract.jobs._download._download_records import DownloadedAsset as DownloadedAsset
from eoextract.jobs._download._session import BackendHeaders as BackendHeaders
from eoextract.jobs._download._session import fetch_job_assets as fetch_job_assets
from eoextract.jobs._download._session import session_for as session_for
from eoextract.jobs._download._transfer import DEFAULT_MAX_ASSET_BYTES as DEFAULT_MAX_ASSET_BYTES
from eoextract.jobs._download._transfer import download_asset as download_asset
from eoextract.jobs._download._transfer import download_to_temp as download_to_temp
