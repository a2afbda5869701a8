"""The public surface, as it can really be imported: which modules are public, which names
each exports; a public name gone missing or a private module leaking fails here."""

import importlib
import inspect
import pkgutil

import pytest

import eoextract

#: The public modules and the names each exports. A change here is a change of the public API.
PUBLIC = {
    "eoextract": {
        "AUXILIARY", "AssetDefinition", "AssetRefused", "BackendError", "ChecksumMismatch",
        "ConfigurationError", "DownloadError", "EmptyCatalogue", "EoextractError",
        "ExtractionManager", "FatalBackendError",
        "GFMAPJobManager", "InvalidTransition", "JobDatabase", "JobDatabaseError", "JobError",
        "JobLost", "JobManager", "JobRecord", "JobStatus", "LocalBackend",
        "MultiBackendJobManager", "ProcessBasedJobCreator", "RetryableBackendError",
        "SchemaVersionError", "Sentinel2Grid", "StacError", "StacValidationError", "StatusChange",
        "UnsafeAssetPath", "__version__", "build_collection", "create_job_db",
        "extend_collection", "get_job_db", "split_area", "split_job_hex", "split_job_s2grid", "validate",
        "validate_catalog"},
    "eoextract.errors": {
        "AssetRefused", "BackendError", "ChecksumMismatch", "ConfigurationError",
        "DownloadError", "EmptyCatalogue",
        "EoextractError", "FatalBackendError", "InvalidTransition", "JobDatabaseError",
        "JobError", "JobLost", "RetryableBackendError", "SchemaVersionError", "StacError",
        "StacValidationError", "UnsafeAssetPath", "OutputPathConflict", "QualityCheckFailed",
        "DatasetError", "IncompleteDataset"},
    "eoextract.backend": {"BackendProfile", "BackendSettings", "LocalBackend", "create_app", "serve"},
    "eoextract.cli": {"EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "app"},
    "eoextract.dataset": {
        "CompletenessReport", "DatasetInfo", "Selection", "SplitResult", "dataset_info",
        "expected_samples", "find_point_files", "iter_patches", "merge_points", "open_patches",
        "PatchPointsResult", "patches_to_points", "select_items", "split_by_epsg"},
    "eoextract.extract": {
        "AUXILIARY", "AssetDefinition", "ExtractionManager", "FILE_LOCK", "GFMAPJobManager",
        "ItemStore", "JobItems", "PostJobAction", "SENTINEL2_L2A", "build_catalogue",
        "mark_jobs_published", "publish_catalogue", "sentinel2_l2a_definition"},
    "eoextract.jobs": {
        "ActionResult", "Backoff", "ErrorClass", "FinishedJob", "FinishedJobResult",
        "JobManager", "JobStatus", "MultiBackendJobManager", "ProcessBasedJobCreator",
        "RetryPolicy", "StartJob", "cancel_jobs", "create_job_db", "get_job_db", "job_logs",
        "retry_jobs", "QualityCheck", "ExpectedAssets", "UsageAtMost", "ArrayCheck", "JobOutput",
        "BackendLoad"},
    "eoextract.jobs.db": {
        "ADOPTABLE", "FileJobDatabase", "JobDatabase", "JobRecord", "MANAGED_COLUMNS",
        "SqlJobDatabase", "StatusChange", "Transition", "UPDATABLE_FIELDS", "create_job_db",
        "get_job_db"},
    "eoextract.jobs.status": {
        "ACTIVE", "ALLOWED", "BackendStatus", "FAILED", "JobStatus", "ON_BACKEND",
        "OPENEO_STATUS", "STAGE_RETRY", "TERMINAL", "USER_RETRYABLE", "check_transition",
        "is_allowed"},
    "eoextract.report": {
        "ErrorClassSummary", "RunSummary", "footprints", "format_duration", "history_frame",
        "iter_output_items", "jobs_frame", "render_report", "summarize", "write_report"},
    "eoextract.split": {
        "Sentinel2Grid", "TileGrid", "centroids_lonlat", "s2_tile", "split_area", "split_job_hex",
        "split_job_s2grid"},
    "eoextract.stac": {
        "CollectionBuilder", "Layout", "ValidationReport", "build_collection", "drop_existing",
        "existing_values", "extend_collection", "iter_catalog_items", "layout_key", "validate", "validate_catalog",
        "validate_dict"},
    "eoextract.stac.publish": {
        "CatalogEntry", "ObjectStoreWriter", "ObstoreWriter", "PublishError", "PublishResult",
        "PublishTarget", "RemoteObject", "TARGETS", "export_geoparquet", "find_root",
        "load_into_pgstac", "publish", "publish_to_s3", "publish_to_stac_api",
        "publish_to_store", "read_geoparquet_items", "walk_catalog"},
}


def _all_modules() -> list[str]:
    names = ["eoextract"]
    for info in pkgutil.walk_packages(eoextract.__path__, "eoextract."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def test_only_the_public_modules_have_public_names():
    found = {name for name in _all_modules()
             if not any(part.startswith("_") for part in name.split(".")[1:])}
    assert found == set(PUBLIC)


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_pinned_and_resolve(module):
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name}"
        assert name in dir(mod)


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_objects_come_from_eoextract(module):
    """Every exported class or function is defined by eoextract (not a leaked third-party name)."""
    mod = importlib.import_module(module)
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            origin = obj.__module__
            assert origin.startswith("eoextract"), f"{module}.{name} comes from {origin}"


def test_private_modules_declare_no_public_list():
    leaking = []
    for name in _all_modules():
        if name in PUBLIC:
            continue
        if "__all__" in vars(importlib.import_module(name)):
            leaking.append(name)
    assert leaking == []


def test_unknown_attribute_raises():
    for module in PUBLIC:
        with pytest.raises(AttributeError, match="does_not_exist"):
            getattr(importlib.import_module(module), "does_not_exist")
