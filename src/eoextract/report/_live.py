"""A live status page of a run: ``eoextract serve-status jobs.db``.

A small read-only HTTP server (loopback by default) serves one page that asks for
``status.json`` every few seconds and shows: jobs per status and backend, slots in use
against the job limits learned from the backends, credits spent, throughput and ETA, the
latest failures and a map of the jobs (coloured by status). The database is opened anew
for every request, so the page follows a run that another process drives (file databases
included); nothing is ever written.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eoextract._util.redact import redact
from eoextract.jobs.status import ACTIVE, JobStatus

_log = logging.getLogger(__name__)

#: Jobs drawn on the map at most (the first ones of the table).
MAP_LIMIT = 5000
#: Latest failures listed.
FAILURES = 10


def status_document(location: str) -> dict[str, Any]:
    """What the page shows, read from the job database at ``location`` (opened and closed)."""
    from eoextract.jobs.db import get_job_db
    from eoextract.report._summary import summarize

    db = get_job_db(location)
    try:
        summary = summarize(db, top_errors=5).to_dict()
        active = db.active_counts()
        state = db.backend_state()
        learned = state.get("capacity") or {}
        budget = state.get("budget")
        costs = db.cost_totals()
        failed = db.jobs([JobStatus.ERROR, JobStatus.START_FAILED], limit=FAILURES, latest_first=True)
        failures = [{"job": r.job_key, "status": str(r.status), "class": r.fields.get("error_class"),
                     "message": redact(str(r.fields.get("error_message") or ""))[:300]}
                    for r in failed[:FAILURES]]
        points = []
        for rec in db.jobs(limit=MAP_LIMIT):
            centroid = _centroid(rec.row.get("geometry"))
            if centroid is not None:
                points.append([round(centroid[0], 5), round(centroid[1], 5), str(rec.status)])
    finally:
        db.close()
    slots = {name: {"active": int(active.get(name, 0)), "limit": learned.get(name)}
             for name in sorted(set(active) | set(learned) | set(summary.get("backends", {})))}
    return {"summary": json.loads(redact(json.dumps(summary, default=str))), "slots": slots,
            "credits": {"spent": costs.spent, "jobs": costs.jobs_with_costs,
                        "by_backend": dict(costs.by_backend), "budget": budget}, "failures": failures,
            "points": points, "active_statuses": sorted(s.value for s in ACTIVE)}


def _centroid(geometry: Any) -> tuple[float, float] | None:
    """The centre of a job's geometry: a shapely geometry, or GeoJSON (a FeatureCollection
    of samples, as GFMAP rows carry, as text or dict)."""
    if isinstance(geometry, str):
        try:
            geometry = json.loads(geometry)
        except ValueError:
            return None
    if isinstance(geometry, dict):
        from shapely.geometry import GeometryCollection, shape

        try:
            features = geometry.get("features")
            geometry = (GeometryCollection([shape(f["geometry"]) for f in features])
                        if features is not None else shape(geometry))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
    centroid = getattr(geometry, "centroid", None)
    if centroid is None or centroid.is_empty:
        return None
    return centroid.x, centroid.y


class StatusServer:
    """The status page of the job database at ``location`` on ``host:port`` (0: a free port).

    Use as a context manager, or :meth:`start`/:meth:`stop`; :attr:`url` is its address.
    """

    def __init__(self, location: str, host: str = "127.0.0.1", port: int = 0, interval_s: float = 2.0) -> None:
        self.location = str(location)
        self.interval_s = float(interval_s)
        page = _PAGE.replace("__INTERVAL_MS__", str(int(self.interval_s * 1000)))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self._send(200, "text/html; charset=utf-8", page.encode())
                elif path == "/status.json":
                    try:
                        body = json.dumps(status_document(server.location), default=str).encode()
                        self._send(200, "application/json", body)
                    except Exception as exc:  # noqa: BLE001 - the page shows it and asks again
                        self._send(503, "application/json", json.dumps({"error": redact(str(exc))}).encode())
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                _log.debug("status page: " + format, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> StatusServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="eoextract-status", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> StatusServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>eoextract run status</title>
<style>body{font:14px sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f4f4f4}
.bad{color:#b00}#map{border:1px solid #ccc}</style></head><body>
<h1>Run status</h1><p id="line">loading...</p>
<h2>Jobs per status and backend</h2><table id="counts"></table>
<h2>Slots</h2><table id="slots"></table>
<h2>Latest failures</h2><table id="failures"></table>
<h2>Map of the jobs</h2><svg id="map" width="600" height="400"></svg>
<script>
const COLORS={finished:"#2a9d3a",error:"#c0392b",start_failed:"#c0392b",running:"#2f6fd0",
 queued:"#8e7cc3",created:"#8e7cc3",creating:"#8e7cc3",downloading:"#e08e0b",postprocessing:"#e08e0b"};
function esc(s){return String(s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));}
function render(d){
 const s=d.summary, statuses=Object.keys(s.counts||{}), backends=Object.keys(s.by_backend||{});
 let h="<tr><th>status</th><th>total</th>"+backends.map(b=>"<th>"+esc(b)+"</th>").join("")+"</tr>";
 for(const st of statuses){h+="<tr><td>"+esc(st)+"</td><td class='n'>"+s.counts[st]+"</td>"+
  backends.map(b=>"<td>"+((s.by_backend[b]||{})[st]||"")+"</td>").join("")+"</tr>";}
 document.getElementById("counts").innerHTML=h;
 let sl="<tr><th>backend</th><th>jobs on it</th><th>learned limit</th></tr>";
 for(const [b,v] of Object.entries(d.slots)){sl+="<tr><td>"+esc(b)+"</td><td>"+v.active+"</td><td>"+(v.limit??"-")+"</td></tr>";}
 document.getElementById("slots").innerHTML=sl;
 let f="<tr><th>job</th><th>status</th><th>class</th><th>message</th></tr>";
 for(const x of d.failures){f+="<tr><td>"+esc(x.job)+"</td><td>"+esc(x.status)+"</td><td class='bad'>"+esc(x["class"]||"")+
  "</td><td style='text-align:left'>"+esc(x.message)+"</td></tr>";}
 document.getElementById("failures").innerHTML=f;
 const eta=s.open?(s.eta_s!=null?Math.round(s.eta_s)+" s":"unknown"):"done";
 document.getElementById("line").textContent=s.total+" jobs, "+s.done+" final ("+s.failed+" failed), "+s.open+
  " open; throughput "+(s.throughput_per_hour||0).toFixed(1)+" jobs/h; ETA "+eta+"; credits "+
  d.credits.spent.toFixed(2)+(d.credits.budget!=null?" of a budget of "+d.credits.budget:"")+
  " ("+d.credits.jobs+" jobs)";
 const pts=d.points, svg=document.getElementById("map");
 if(pts.length){const xs=pts.map(p=>p[0]),ys=pts.map(p=>p[1]);
  const x0=Math.min(...xs),x1=Math.max(...xs),y0=Math.min(...ys),y1=Math.max(...ys);
  const sx=v=>10+580*(x1>x0?(v-x0)/(x1-x0):.5), sy=v=>390-380*(y1>y0?(v-y0)/(y1-y0):.5);
  svg.innerHTML=pts.map(p=>"<circle cx='"+sx(p[0]).toFixed(1)+"' cy='"+sy(p[1]).toFixed(1)+
   "' r='4' fill='"+(COLORS[p[2]]||"#999")+"'><title>"+esc(p[2])+"</title></circle>").join("");}
}
async function tick(){try{const r=await fetch("status.json",{cache:"no-store"});const d=await r.json();
 if(r.ok){render(d);}else{document.getElementById("line").textContent="error: "+d.error;}}
 catch(e){document.getElementById("line").textContent="no answer: "+e;}
 setTimeout(tick,__INTERVAL_MS__);}
tick();
</script></body></html>"""
