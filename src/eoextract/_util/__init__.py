"""Private helpers shared by every package, each written once.

- :mod:`~eoextract._util.files`: atomic writes (temporary file, fsync, rename, directory fsync);
- :mod:`~eoextract._util.utc`: aware UTC times from anything that names one;
- :mod:`~eoextract._util.hrefs`: what an href is (URL, local path) and where it points;
- :mod:`~eoextract._util.redact`: masking credentials in text and URLs;
- :mod:`~eoextract._util.logs`: every log record of ``eoextract`` and its children redacted;
- :mod:`~eoextract._util.retry`: the retry policy (error classes, retryable HTTP statuses,
  ``Retry-After``, backoff) used by the manager, downloads and publishing alike.
- :mod:`~eoextract._util.lazy`: lazy re-exports for package ``__init__`` modules.

Nothing here is public API.
"""
