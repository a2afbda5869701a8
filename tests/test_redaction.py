"""The one redaction: pure properties of :func:`redact` (many examples), the log filter,
and an extraction whose asset host refuses signed URLs, checked in every place its text
reaches (job database file, logs, report, CLI output, catalogue, manifests)."""

from __future__ import annotations

import logging
import string
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from eoextract._util.redact import MASK, redact, redact_data

# secrets: long enough not to occur by chance, from the alphabets real credentials use
_B64 = string.ascii_letters + string.digits + "+/="
_URLSAFE = string.ascii_letters + string.digits + "-_"
secrets = st.text(_B64 + "-_.~", min_size=12, max_size=60).filter(lambda s: s.strip("=+/-_.~"))
hex_secrets = st.text("0123456789abcdef", min_size=32, max_size=64)
words = st.lists(st.sampled_from(["job", "j-12", "failed", "HTTP", "500", "at", "backend", "(retry)",
                                  "in", "30", "s", "asset", "openEO.nc", "->", "error:", "host"]),
                 max_size=8).map(" ".join)


def _s3(secret: str, host: str) -> str:
    cred = quote(f"AKIA{secret[:4].upper()}/20240101/eu-west-1/s3/aws4_request", safe="")
    return (f"https://{host}/bucket/openEO_0.nc?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={cred}"
            f"&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
            f"&X-Amz-Security-Token={quote(secret, safe='')}&X-Amz-Signature={quote(secret, safe='')}")


def _gcs(secret: str, host: str) -> str:
    return (f"https://{host}/b/o.nc?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam"
            f"&X-Goog-Signature={quote(secret, safe='')}")


def _gcs_v2(secret: str, host: str) -> str:
    return (f"http://{host}/b/o.nc?GoogleAccessId=sa@p.iam.gserviceaccount.com&Expires=1700000000"
            f"&Signature={quote(secret, safe='')}")


def _azure(secret: str, host: str) -> str:
    return (f"https://{host}/c/o.nc?sv=2022-11-02&ss=b&srt=o&sp=r&se=2030-01-01T00:00:00Z"
            f"&st=2024-01-01T00:00:00Z&spr=https&sig={quote(secret, safe='')}")


def _openeo(secret: str, host: str) -> str:
    token = quote(secret, safe="")
    return f"http://{host}/openeo/1.2/jobs/j-2401abc/results/assets/{token}/openEO_0.nc?expires=1700000000"


def _userinfo(secret: str, host: str) -> str:
    return f"https://alice:{quote(secret, safe='')}@{host}/stac/collections"


URL_KINDS = {"s3": _s3, "gcs": _gcs, "gcs_v2": _gcs_v2, "azure": _azure, "openeo": _openeo,
             "userinfo": _userinfo}


def _requests_error(url: str) -> str:
    """What requests says when the host of ``url`` refuses: the URL twice, once as a path."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    return (f"Download of asset 'openEO_0.nc' from {url} failed after 3 tries: "
            f"HTTPConnectionPool(host='{parts.hostname}', port={parts.port or 80}): Max retries exceeded "
            f"with url: {path} (Caused by NewConnectionError('<urllib3.connection.HTTPConnection object "
            f"at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused'))")


def _gone(secret: str, text: str) -> bool:
    return secret not in text and quote(secret, safe="") not in text


def _leaked(secret: str, out: str, neutral_out: str) -> bool:
    """Whether ``out`` holds ``secret`` (or its quoted form) more often than the same text
    built around a neutral secret: what the text around the URL holds by itself (a secret
    ``ConnectionEr`` is also part of ``NewConnectionError``) is no leak."""
    return any(out.count(form) > neutral_out.count(form) for form in {secret, quote(secret, safe="")})


def _url_texts(url: str, before: str, after: str) -> tuple[str, ...]:
    """The places a URL is met in: a message, requests' connection error, a repr, a
    traceback line, JSON with escaped slashes."""
    return (f"{before} {url} {after}", _requests_error(url), repr({"href": url}),
            f"{before}\n  File x.py, line 3\n    get({url!r})\n{after}", url.replace("/", "\\/"))


NEUTRAL_SECRET = "\u00a7" * 12  # outside every secret's alphabet, quoted as %C2%A7


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(URL_KINDS)), secret=secrets, before=words, after=words,
       host=st.sampled_from(["127.0.0.1:8123", "bucket.s3.eu-west-1.amazonaws.com", "h.example"]))
@example(kind="azure", secret="ConnectionEr", before="", after="", host="127.0.0.1:8123")
def test_signed_urls_lose_their_secrets_wherever_they_appear(kind, secret, before, after, host):
    texts = _url_texts(URL_KINDS[kind](secret, host), before, after)
    neutral = _url_texts(URL_KINDS[kind](NEUTRAL_SECRET, host), before, after)
    for text, neutral_text in zip(texts, neutral, strict=True):
        out = redact(text, environ={})
        assert not _leaked(secret, out, redact(neutral_text, environ={})), (text, out)
        assert redact(out, environ={}) == out


@settings(max_examples=300, deadline=None)
@given(secret=secrets, key=st.sampled_from(["password", "access_token", "client_secret", "refresh_token",
                                            "aws_secret_access_key", "X-Amz-Security-Token", "apiKey",
                                            "secretAccessKey", "SessionToken", "token"]),
       style=st.sampled_from(["{k}={v}", "{k}: {v}", "'{k}': '{v}'", '"{k}": "{v}"', "{k} = {v}"]),
       before=words, after=words)
@example(secret="Authorizatio", key="password", style="{k}={v}", before="", after="")
def test_credential_pairs_and_headers_lose_their_values(secret, key, style, before, after):
    # A value after ``key:`` or a scheme must look like a token (not a word); it is put in
    # each text as a whole, so a secret that is part of the text around it (``Authorizatio``)
    # is not mistaken for a leak.
    token = "A1" + secret
    quoted_or_assigned = "=" in style or "'" in style or '"' in style
    pair_value = secret if quoted_or_assigned else token
    texts = ((f"{before} {style.format(k=key, v=pair_value)}, {after}", pair_value),
             (f"{before} Authorization: Bearer {token} {after}", token),
             (f"{{'Authorization': 'Basic {token}'}}", token),
             (f"{before} Bearer {token}", token))
    for text, secret_here in texts:
        out = redact(text, environ={})
        assert secret_here not in out, (text, out)
        assert redact(out, environ={}) == out


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
@example("https://u:p@ss@h/x?a=1#b=2")
@example("Authorization: Bearer ***")
@example("x?=&&;=?#")
def test_redaction_is_idempotent_on_any_text(text):
    once = redact(text, environ={})
    assert redact(once, environ={}) == once
    assert redact(once, environ={}, queries="credentials") == redact(once, environ={}, queries="credentials")


@settings(max_examples=300, deadline=None)
@given(words)
def test_ordinary_messages_are_left_alone(text):
    assert redact(text, environ={}) == text


@pytest.mark.parametrize("text", [
    "job 12 failed: HTTP 500 from http://127.0.0.1:8080/jobs/j-1/results (attempt 2 of 3)",
    "wrong password: try again",
    "basic authentication failed",
    "design=1 signal=2 job_key=k1 sigma: 0.5",
    "sha1 0123456789abcdef0123456789abcdef01234567 of /work/out/2021_EUR_DEMO/32631/S2_10m_s1.nc",
    "https://h/wms?service=WMS&request=GetMap&layers=a",
])
def test_prose_paths_and_checksums_stay_readable(text):
    expected = text.replace("service=WMS&request=GetMap&layers=a", "service=***&request=***&layers=***")
    assert redact(text, environ={}) == expected
    assert redact(text, environ={}, queries="credentials") == text


def test_known_token_formats_and_environment_values():
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXBhcnQ"
    aws_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    text = f"token {jwt} key AKIAIOSFODNN7EXAMPLE secret {aws_key} gh ghp_{'a1' * 18} and S3CR3T-value"
    out = redact(text, environ={"MY_SERVICE_PASSWORD": "S3CR3T-value", "HOME": "/root"})
    for secret in (jwt, "AKIAIOSFODNN7EXAMPLE", aws_key, "ghp_", "S3CR3T-value"):
        assert secret not in out
    assert out.startswith("token *** key *** secret *** gh *** and ***")


def test_data_keeps_ordinary_query_parameters_but_not_credentials():
    item = {"assets": {"data": {"href": "https://h/wms?service=WMS&sig=abc&X-Amz-Signature=def"}},
            "properties": {"access_token": "t0k3n", "note": "see https://u:pw@h/x", "n": 3},
            "links": [{"href": "https://h/a?token=zzz&page=2"}]}
    out = redact_data(item, environ={})
    assert out["assets"]["data"]["href"] == f"https://h/wms?service=WMS&sig={MASK}&X-Amz-Signature={MASK}"
    assert out["properties"] == {"access_token": MASK, "note": f"see https://u:{MASK}@h/x", "n": 3}
    assert out["links"][0]["href"] == f"https://h/a?token={MASK}&page=2"
    assert item["properties"]["access_token"] == "t0k3n"  # a copy


# --------------------------------------------------------------------------- logs


def _log_text(records) -> str:
    formatter = logging.Formatter("%(name)s %(message)s")
    return "\n".join(formatter.format(r) for r in records)


@pytest.mark.parametrize("name", ["eoextract", "eoextract.jobs.manager",
                                  "eoextract.brand_new_child_made_after_import"])
def test_log_records_of_eoextract_and_its_children_are_redacted(name, caplog):
    import eoextract  # noqa: F401  (installs the redaction)

    url = _s3("Zk9Q2mXs7LpW4rTy", "127.0.0.1:9")
    for logger_name in {"eoextract", name}:  # other code may have set their levels
        caplog.set_level(logging.DEBUG, logger=logger_name)
    logger = logging.getLogger(name)
    try:
        raise ConnectionError(_requests_error(url))
    except ConnectionError:
        logger.debug("download of %s failed", url, exc_info=True)
    logger.warning("Authorization: Bearer %s", "eyJhbGciOi.eyJzdWIi.c2ln")
    text = _log_text(caplog.records)
    assert "Zk9Q2mXs7LpW4rTy" not in text and "eyJzdWIi" not in text
    assert "X-Amz-Signature=***" in text and "Traceback" in text and "Connection refused" in text
    assert all(r.args is None and r.exc_info is None for r in caplog.records)


def test_records_made_outside_the_factory_pass_the_filter_and_others_are_untouched(caplog):
    import eoextract  # noqa: F401

    caplog.set_level(logging.DEBUG)
    record = logging.LogRecord("eoextract", logging.INFO, __file__, 1, "pw in %s",
                               ("https://u:hunter22@h/x",), None)
    logging.getLogger("eoextract").handle(record)
    logging.getLogger("somebody.else").info("https://u:hunter22@h/x")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["pw in https://u:***@h/x", "https://u:hunter22@h/x"]


# --------------------------------------------------------------------------- job database


@pytest.mark.parametrize("suffix", ["db", "csv"])
def test_job_database_stores_messages_and_errors_redacted(tmp_path, suffix):
    import pandas as pd
    import requests

    from eoextract.jobs._classify import classify
    from eoextract.jobs.db import create_job_db, get_job_db
    from eoextract.jobs.db._records import Transition

    url = _azure("Q9vXk2LmZ8pR4tWy", "127.0.0.1:9")
    error = requests.ConnectionError(_requests_error(url))
    info = classify(error)
    assert "Q9vXk2LmZ8pR4tWy" not in info.message and "sig=***" in info.message
    path = tmp_path / f"jobs.{suffix}"
    with create_job_db(path, pd.DataFrame({"title": ["a", "b"]})) as db:
        db.transition("0", "creating", message=f"try {url}")
        db.transition("0", "error", message=f"failed: {error}", error_class="ConnectionError",
                      error_message=f"{error}")
        db.transition_many([Transition("1", "creating", message=f"Bearer Zk9Q2mXs7LpW4rTy {url}")])
        db.update("1", error_message=f"see {url}")
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert raw and b"Q9vXk2LmZ8pR4tWy" not in raw and b"Zk9Q2mXs7LpW4rTy" not in raw
    db = get_job_db(path)
    assert "sig=***" in db.get("0").fields["error_message"]
    assert [c.message.count("sig=***") for c in db.history("0")][-2:] == [1, 2]


# --------------------------------------------------------------------------- publishing


class StubStacApi:
    """A STAC API on 127.0.0.1 that accepts every write and keeps what it was sent."""

    def __init__(self) -> None:
        import http.server
        import threading

        received: list[bytes] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(self.headers.get("Authorization", "").encode()
                                + self.rfile.read(length))
                body = b'{"errors": []}'
                self.send_response(201 if self.path == "/collections" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_publish_results_and_errors_keep_no_credentials(tmp_path):
    from eoextract.stac import build_collection
    from eoextract.stac.publish import PublishError, PublishResult, publish_to_stac_api

    secret = "Pw7Qz3Kx9LmN2vBt"
    signed = _azure(secret, "store.example")
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "a", "bbox": [5, 51, 5.1, 51.1],
            "geometry": {"type": "Point", "coordinates": [5.0, 51.0]},
            "properties": {"datetime": "2021-06-01T00:00:00Z", "source": signed,
                           "client_secret": secret},
            "assets": {"remote": {"href": signed, "roles": ["data"]}}, "links": []}
    root = build_collection([item], tmp_path / "stac", collection_id="c", description="d")
    written = b"".join(p.read_bytes() for p in (tmp_path / "stac").rglob("*.json"))
    assert secret.encode() not in written and b"/c/o.nc?sv=***&ss=***" in written
    api = StubStacApi()
    try:
        result = publish_to_stac_api(root, f"http://alice:{secret}@127.0.0.1:{api.port}", max_retries=0)
    finally:
        api.close()
    assert result.n_written == 2 and api.received
    assert result.root_url == f"http://alice:***@127.0.0.1:{api.port}/collections/c"
    assert secret not in repr(result) + result.summary()
    assert not any(secret.encode() in body for body in api.received[1:])  # [0]: the auth header
    late = PublishResult(target=f"s3://b/p?X-Amz-Security-Token={secret}")
    late.errors.append(f"PUT {signed}: HTTP 500")
    late.errors += [f"Authorization: Bearer {secret}"]
    with pytest.raises(PublishError) as raised:
        late.raise_for_errors()
    assert secret not in str(raised.value) + repr(late)


# --------------------------------------------------------------------------- a real run


class AbortingHost:
    """An asset host on 127.0.0.1 that accepts connections and resets them at once."""

    def __init__(self) -> None:
        import socket
        import struct
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

        def serve() -> None:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def _refusing_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connections are refused


def _signed_assets_for_first_job(url_for):
    """A requests response hook (fault injection): the results document of the first job
    whose results are read lists its assets at signed URLs of a failing host."""
    import json as _json
    import re
    from urllib.parse import urlsplit

    import threading

    doomed: set[str] = set()
    lock = threading.Lock()  # downloads of several jobs run in parallel

    def hook(response, *args, **kwargs):
        match = re.search(r"/jobs/([^/]+)/results$", urlsplit(response.url).path)
        if not match or response.request.method != "GET" or response.status_code != 200:
            return response
        with lock:
            if not doomed:
                doomed.add(match[1])
            hit = match[1] in doomed
        if hit:
            doc = response.json()
            for i, asset in enumerate((doc.get("assets") or {}).values()):
                asset["href"] = url_for(i)
            doc["links"] = [lk for lk in doc.get("links") or [] if lk.get("rel") != "item"]
            response._content = _json.dumps(doc).encode()
        return response

    return hook


@pytest.fixture(scope="module")
def s3_endpoint():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "stac"))
    from publish_fixtures import moto_server

    with moto_server() as url:
        yield url


@settings(max_examples=4, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(URL_KINDS)),
       secret=st.text(_URLSAFE, min_size=16, max_size=40).filter(lambda s: len(set(s)) >= 6),
       fault=st.sampled_from(["refuse", "abort"]))
def test_secrets_of_a_failing_asset_host_reach_no_store_log_report_or_output(
        local_backend, s3_endpoint, monkeypatch, kind, secret, fault):
    import io
    import json as _json
    import shutil
    import tempfile
    import uuid
    from pathlib import Path

    import boto3
    import pandas as pd
    from typer.testing import CliRunner

    from eoextract._util.retry import RetryPolicy
    from eoextract.cli import app
    from eoextract.extract import ExtractionManager
    from eoextract.jobs._download import _transfer
    from eoextract.stac.publish import publish_to_s3, publish_to_stac_api

    # the host never answers: no waits between resumptions
    monkeypatch.setattr(_transfer, "resume_policy", lambda backoff: RetryPolicy(base=0.0))
    host = AbortingHost() if fault == "abort" else None
    port = host.port if host else _refusing_port()

    def url_for(i: int) -> str:
        return URL_KINDS[kind](secret, f"127.0.0.1:{port}").replace("openEO_0.nc", f"openEO_{i}.nc")

    hook = _signed_assets_for_first_job(url_for)

    def connect():
        from urllib.parse import urlsplit

        import requests

        connection = local_backend.connect()
        connection.session.hooks["response"].append(hook)
        parts = urlsplit(url_for(0))  # the failing host without the client's retries and waits
        connection.session.mount(f"{parts.scheme}://{parts.netloc}/", requests.adapters.HTTPAdapter())
        return connection

    def start_job(row, connection, **kwargs):
        cube = connection.load_collection(
            "SENTINEL2_L2A", spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
            temporal_extent=["2021-06-01", "2021-06-10"], bands=["B04"])
        return cube.create_job(title=row["title"], job_options={"eoextract_mode": "instant"},
                               out_format="NetCDF")

    def post_job_action(items, row, parameters):  # user code that records where data came from
        for item in items:
            item.properties["source"] = url_for(9)
            item.properties["mirrors"] = [make(secret, "mirror.example") for make in URL_KINDS.values()]
            item.properties["api_token"] = secret
            item.add_asset("remote", type(next(iter(item.assets.values())))(href=url_for(8)))
        return items

    root = Path(tempfile.mkdtemp(prefix="redaction-"))
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("eoextract")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    api = StubStacApi()
    try:
        manager = ExtractionManager(
            root / "out", lambda folder, tmp, index, row: folder / f"{row.name}_{index}.nc",
            "REDACTION", f"test {uuid.uuid4().hex[:6]}", poll_sleep=0.05, retry_backoff=0.01,
            max_attempts=1, post_job_action=post_job_action)
        manager.add_backend("local", connect, parallel_jobs=2)
        df = pd.DataFrame({"title": [f"r{uuid.uuid4().hex[:8]}-{i}" for i in range(2)]})
        stats = manager.run_jobs(df, start_job, root / "jobs.db")
        assert sorted(stats["status_counts"].items()) == [("error", 1), ("finished", 1)], stats
        manager.create_stac()
        publish_to_stac_api(root / "out", f"http://alice:{secret}@127.0.0.1:{api.port}", max_retries=0)
        bucket = f"b-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=bucket)
        s3 = publish_to_s3(root / "out", f"s3://{bucket}/run", endpoint_url=s3_endpoint,
                           access_key_id="testing", secret_access_key="testing",
                           public_url=f"https://reader:{secret}@cdn.example/{bucket}/run",
                           absolute_asset_urls=True)
        assert s3.ok, s3.errors
        runner = CliRunner()
        outputs = [runner.invoke(app, args) for args in (
            ["jobs", str(root / "jobs.db"), "-f", "json"], ["jobs", str(root / "jobs.db"), "-f", "csv"],
            ["jobs", str(root / "jobs.db")], ["status", str(root / "jobs.db"), "--json"],
            *(["history", str(root / "jobs.db"), key, *flag] for key in ("0", "1") for flag in ([], ["--json"])),
            ["report", str(root / "jobs.db"), "-o", str(root / "report.html")])]
        assert [o.exit_code for o in outputs] == [0] * len(outputs), [o.output for o in outputs]
        error_row = [r for r in _json.loads(outputs[0].output) if r["status"] == "error"][0]
        assert "failed after" in error_row["error_message"]
    finally:
        api.close()
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        if host:
            host.close()
    stored = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert root / "report.html" in stored and any(p.name.endswith(".journal") or "publish" in p.parts
                                                   for p in stored)
    texts = {str(p): b.decode("utf-8", "replace") for p, b in stored.items()}
    texts["log"] = log.getvalue()
    texts["cli"] = "\n".join(o.output for o in outputs)
    texts["stac api"] = b"".join(api.received[1:]).decode()
    texts["s3 result"] = repr(s3)
    objects = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                           aws_secret_access_key="testing", region_name="us-east-1")
    for obj in objects.list_objects_v2(Bucket=bucket)["Contents"]:
        texts[obj["Key"]] = objects.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode(
            "utf-8", "replace")
    assert "Connection" in texts["log"] and "remote" in texts[f"run/stac/collection.json"] + "".join(texts.values())
    leaks = sorted(name for name, text in texts.items() if not _gone(secret, text))
    assert not leaks, {name: texts[name][max(0, texts[name].find(secret) - 200):][:400] for name in leaks}
    shutil.rmtree(root, ignore_errors=True)


def test_cli_debug_tracebacks_are_redacted(tmp_path):
    import subprocess
    import sys

    secret = "Hx7Kq2Lm9Zp4Wv8R"
    done = subprocess.run(
        [sys.executable, "-m", "eoextract.cli", "--debug", "status",
         f"postgresql://user:{secret}@127.0.0.1:1/nowhere?sslpassword={secret}"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" in done.stderr
    assert secret not in done.stderr + done.stdout


def test_environment_keys_mask_long_values_only():
    env = {"SORT_KEY": "name", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPx", "DB_PASSWORD": "pw12"}
    assert redact("name wJalrXUtnFEMIK7MDENGbPx pw12", environ=env) == "name *** ***"
