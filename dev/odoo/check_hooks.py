#!/usr/bin/env python3
"""Checks walua's Odoo hooks end to end against a REAL Odoo 16, as a customer would see it.

Python 3 standard library only. Development tool (CI never runs it). It:

- restores the Odoo database to fresh demo data (/work/odoo/reset-db.sh, unless --no-reset);
- starts `walua-fake-graph` (loopback fake of Meta's Graph API) behind a small recording
  proxy (this script), so that every Graph request walua makes is kept with its arrival time
  and body in WORK/graph.jsonl (the fake itself only reports a count);
- writes WORK/walua.toml (live, dry_run = false, api_base = the proxy, Odoo on loopback,
  poll_interval 2s, fallback_after 10s) and a copy of the repository's scripts/, and runs
  `walua serve` (log WORK/walua.log);
- opens the 24 h window of the customers it uses (signed inbound text webhooks), then runs:

  1. mass change: 105 quotations for one partner in ONE create([...]); then confirms the
     oldest of them: 105 creation messages + 1 "Confirmée", each exactly once;
  2. late commit: order A confirmed in `odoo-bin shell`, committed 8 s later; order B
     confirmed over JSON-RPC meanwhile: both "Confirmée", once each;
  3. first sight: create + action_confirm back to back (3 orders): buttons AND "Confirmée";
  4. invoices: create, then post (PDF document once); create+post back to back (first
     sight, PDF once); a partial then a final payment (account.payment.register): one
     notice each;
  5. outage: Odoo stopped, a customer taps "Voir détail"; /healthz, `walua parked list
     --all`; the fallback reply after 10 s; walua killed with SIGKILL and restarted; Odoo
     restarted: the details arrive, once;
  7. (informational) a demo quotation older than walua's first start (its dates moved back a
     day in PostgreSQL before walua starts) is confirmed: what the customer gets;
  6. measures: delays from each Odoo commit to walua's queueing (store) and to the Graph
     request; walua's RSS;

  and prints a summary (also WORK/results.json). Odoo is left running.

Usage (from the repository root, Odoo as dev/odoo/README.md sets it up). Build a clean
export of the commit to check (a work tree being edited may not build), then run:

    rm -rf /tmp/walua-src && mkdir /tmp/walua-src && git archive HEAD | tar -x -C /tmp/walua-src
    git rev-parse HEAD > /tmp/walua-src/COMMIT
    (cd /tmp/walua-src && CARGO_TARGET_DIR=/work/odoo/hookcheck-target cargo build --bins)
    python3 dev/odoo/check_hooks.py --src /tmp/walua-src --bin-dir /work/odoo/hookcheck-target/debug

It takes about 20 minutes (the 105 creation messages to one customer are paced by walua at
Meta's pair rate: 10 at once, then one per 6 s). Exit status 0 when every check passed.

Options: --src DIR (conf/ and scripts/ come from there; default this repository),
--work DIR (/work/odoo/hookcheck), --checks 1,2,3,4,5 (default all), --no-reset,
--orders N (105), --odoo-src, --odoo-python, --key-file, --keep-walua (leave walua and the
fake running at the end).
"""

import argparse
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ODOO_URL = "http://127.0.0.1:8069"
DB = "walua"
PNID = "1234567890"           # our business number id (digits, as the fake requires)
ACCESS = "hookcheck-access-token"
APP_SECRET = "hookcheck-app-secret"
ADMIN = "hookcheck-admin-token"
WALUA_PORT = 18480
PRODUCT = 17                  # demo "Large Cabinet", 320.0

# Demo partners (fresh demo data) and their phones as the shipped scripts send to them.
P_MASS = 10       # Deco Addict (603)-996-3829
P_LATE_A = 12     # Ready Mat
P_LATE_B = 15     # Lumber Inc
P_FIRST = 9       # Wood Corner
P_INVOICE = 14    # Azure Interior


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------- Odoo JSON-RPC

class Odoo:
    def __init__(self, key):
        self.key = key

    def call(self, model, method, args, kwargs=None, timeout=300):
        a = [DB, 2, self.key, model, method, args]
        if kwargs is not None:
            a.append(kwargs)
        body = json.dumps({"jsonrpc": "2.0", "method": "call",
                           "params": {"service": "object", "method": "execute_kw", "args": a},
                           "id": 1}).encode()
        req = urllib.request.Request(ODOO_URL + "/jsonrpc", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            ans = json.loads(r.read())
        if "error" in ans:
            raise RuntimeError("Odoo: " + json.dumps(ans["error"].get("data", ans["error"]))[:800])
        return ans.get("result")

    def up(self):
        try:
            urllib.request.urlopen(ODOO_URL + "/web/login", timeout=3).read()
            return True
        except Exception:
            return False


def phone_of(odoo, partner, canonical):
    """The number walua sends to for a partner: its digits (scripts that strip non-digits), or
    with the partner's country code (scripts that call env.phone.normalize, as Meta's wa_id)."""
    p = odoo.call("res.partner", "read", [[partner]], {"fields": ["phone", "mobile", "country_id"]})[0]
    raw = p["mobile"] or p["phone"]
    digits = re.sub(r"[^0-9]", "", raw)
    if not canonical or raw.strip().startswith("+") or not p["country_id"]:
        return digits
    code = odoo.call("res.country", "read", [[p["country_id"][0]]], {"fields": ["phone_code"]})[0]["phone_code"]
    return f"{code}{digits.lstrip('0')}"


# ---------------------------------------------------------------- recording Graph proxy

class Recorder:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.entries = []
        self.file = open(path, "a")

    def add(self, e):
        with self.lock:
            self.entries.append(e)
            self.file.write(json.dumps(e) + "\n")
            self.file.flush()

    def snapshot(self):
        with self.lock:
            return list(self.entries)


def start_proxy(upstream_port, recorder):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _do(self):
            t = time.time()
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "connection", "content-length", "transfer-encoding")}
            c = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
            c.request(self.command, self.path, body=raw or None, headers=headers)
            r = c.getresponse()
            data = r.read()
            c.close()
            entry = {"t": t, "method": self.command, "path": self.path, "status": r.status}
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                try:
                    entry["body"] = json.loads(raw)
                except ValueError:
                    entry["body_raw"] = raw[:200].decode("latin-1")
            elif raw:
                m = re.search(rb'filename="([^"]*)"', raw)
                entry["upload"] = {"bytes": len(raw), "filename": m.group(1).decode() if m else None,
                                   "pdf": b"%PDF-" in raw}
            try:
                entry["answer"] = json.loads(data)
            except ValueError:
                entry["answer_bytes"] = len(data)
            recorder.add(entry)
            self.send_response(r.status)
            self.send_header("Content-Type", r.getheader("Content-Type") or "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _do
        do_POST = _do

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def classify(e):
    """(kind, key) of one Graph request, key naming the order / invoice it is about."""
    if e["method"] == "POST" and e["path"].endswith("/media"):
        return ("upload", (e.get("upload") or {}).get("filename"))
    b = e.get("body") or {}
    if not e["path"].endswith("/messages"):
        return ("other", e["path"])
    if b.get("status") == "read":
        return ("read_receipt", b.get("message_id"))
    ty = b.get("type")
    if ty == "interactive":
        body = b["interactive"].get("body", {}).get("text", "")
        m = re.search(r"Votre commande (\S+) a été créée", body)
        return ("created", m.group(1) if m else body[:40])
    if ty == "template":
        t = b["template"]
        params = [p.get("text") for c in t.get("components", []) if c.get("type") == "body"
                  for p in c.get("parameters", [])]
        if t["name"] == "order_created":
            return ("created_template", params[1] if len(params) > 1 else None)
        return ("template:" + t["name"], params[0] if params else None)
    if ty == "document":
        cap = b["document"].get("caption", "")
        m = re.search(r"Votre facture (\S+)", cap)
        return ("invoice_pdf", m.group(1) if m else cap)
    if ty == "text":
        txt = b["text"]["body"]
        m = re.match(r"Votre commande (\S+) est maintenant : ([^(]+) \(", txt)
        if m:
            return ("state:" + m.group(2).strip(), m.group(1))
        m = re.match(r"Détail de la commande (\S+) :", txt)
        if m:
            return ("details", m.group(1))
        m = re.match(r"Paiement reçu pour la facture (\S+)\.", txt)
        if m:
            return ("payment_partial", m.group(1))
        m = re.match(r"Facture (\S+) soldée", txt)
        if m:
            return ("payment_full", m.group(1))
        return ("text", txt[:60])
    return (ty or "?", None)


def sends(recorder, accepted_only=True):
    """[(t, kind, key, to, entry)] of message sends (not uploads), in arrival order."""
    out = []
    for e in recorder.snapshot():
        kind, key = classify(e)
        if kind in ("upload", "other", "read_receipt"):
            continue
        if accepted_only and e["status"] != 200:
            continue
        out.append((e["t"], kind, key, (e.get("body") or {}).get("to"), e))
    return out


# ---------------------------------------------------------------- walua

class Walua:
    def __init__(self, args, work, api_base):
        self.args, self.work, self.api_base = args, work, api_base
        self.bin = os.path.join(args.bin_dir, "walua")
        self.conf = os.path.join(work, "walua.toml")
        self.proc = None

    def write_config(self, key_file):
        base = open(os.path.join(self.args.src, "conf", "walua.toml")).read()
        # Keep the shipped file's comments and [scripts]/[vars]; change what a live check needs.
        subs = [
            (r'(?m)^listen = .*$', f'listen = "127.0.0.1:{WALUA_PORT}"'),
            (r'(?m)^# admin_token = .*$', f'admin_token = "{ADMIN}"'),
            (r'(?m)^path = "var/walua.redb".*$', f'path = "{self.work}/store/walua.redb"'),
            (r'(?m)^phone_number_id = "".*$', f'phone_number_id = "{PNID}"'),
            (r'(?m)^# access_token = .*$', f'access_token = "{ACCESS}"'),
            (r'(?m)^# app_secret = .*$', f'app_secret = "{APP_SECRET}"'),
            (r'(?m)^# verify_token = .*$', 'verify_token = "hookcheck-verify"'),
            (r'(?m)^api_base = .*$', f'api_base = "{self.api_base}"'),
            (r'(?m)^dry_run = true', 'dry_run = false'),
            (r'(?m)^dir = "scripts"', f'dir = "{self.work}/scripts"'),
            (r'(?m)^fallback_after = "2m"', 'fallback_after = "10s"'),
        ]
        for pat, rep in subs:
            base, n = re.subn(pat, rep, base, count=1)
            if n != 1:
                raise SystemExit(f"conf/walua.toml changed: {pat!r} matched {n} times")
        odoo = (
            "[odoo]\n"
            f'url = "{ODOO_URL}"\n'
            f'db = "{DB}"\n'
            'login = "admin"\n'
            f'api_key = "file:{key_file}"\n'
            'poll_interval = "2s"\n'
        )
        base = base.replace("[scripts]\n", odoo + "\n[scripts]\n", 1)
        open(self.conf, "w").write(base)

    def start(self):
        logf = open(os.path.join(self.work, "walua.log"), "a")
        logf.write(f"\n===== walua serve started by check_hooks.py at {time.strftime('%H:%M:%S')} =====\n")
        logf.flush()
        env = dict(os.environ, NO_COLOR="1")
        self.proc = subprocess.Popen([self.bin, "serve", "--config", self.conf], cwd=self.work,
                                     stdout=logf, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        for _ in range(300):
            try:
                self.health()
                return
            except Exception:
                if self.proc.poll() is not None:
                    raise SystemExit("walua exited; see " + os.path.join(self.work, "walua.log"))
                time.sleep(0.1)
        raise SystemExit("walua did not answer /healthz")

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def rss_kb(self):
        out = {}
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
        return out

    def http(self, method, path, body=None, headers=None, auth=True):
        h = dict(headers or {})
        if auth:
            h["Authorization"] = "Bearer " + ADMIN
        req = urllib.request.Request(f"http://127.0.0.1:{WALUA_PORT}{path}", body, h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def health(self):
        st, body = self.http("GET", "/healthz", auth=False)
        return json.loads(body)

    def webhook(self, payload):
        raw = json.dumps(payload).encode()
        sig = hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        st, body = self.http("POST", "/webhook", raw, {"Content-Type": "application/json",
                                                       "X-Hub-Signature-256": "sha256=" + sig}, auth=False)
        if st != 200:
            raise RuntimeError(f"webhook answered {st}: {body[:200]}")

    def messages(self, contact, limit=1000):
        st, body = self.http("GET", f"/api/conversations/{contact}/messages?limit={limit}")
        if st != 200:
            return []
        v = json.loads(body)
        return v.get("messages", v) if isinstance(v, dict) else v

    def cli(self, *argv):
        r = subprocess.run([self.bin, *argv, "--config", self.conf], cwd=self.work,
                           capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip()


def inbound(phone, kind="text", button_id=None, title=None, name="Client"):
    msg = {"from": phone, "id": "wamid.CHECK" + uuid.uuid4().hex, "timestamp": str(int(time.time()))}
    if kind == "text":
        msg.update(type="text", text={"body": "Bonjour"})
    else:
        msg.update(type="interactive",
                   interactive={"type": "button_reply", "button_reply": {"id": button_id, "title": title}})
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "221338601234", "phone_number_id": PNID},
                  "contacts": [{"profile": {"name": name}, "wa_id": phone}],
                  "messages": [msg]}}]}]}


# ---------------------------------------------------------------- helpers

def wait_for(pred, timeout, step=0.25):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def count_by(items):
    out = {}
    for it in items:
        out[it] = out.get(it, 0) + 1
    return out


def first_send(rec, kind, key):
    for t, k, kk, to, e in sends(rec):
        if k == kind and kk == key:
            return t
    return None


def queued_times(walua, phone):
    """{(kind, key): [stored_at seconds]} of walua's outbound messages to `phone`."""
    out = {}
    for m in walua.messages(phone):
        if m.get("direction") != "outbound":
            continue
        kind, key = classify({"method": "POST", "path": "/x/messages", "body": m.get("raw") or {}})
        out.setdefault((kind, key), []).append(m.get("stored_at_ms", 0) / 1000)
    return out


def log_lines(work, pattern, since_line=0):
    lines = open(os.path.join(work, "walua.log"), errors="replace").read().splitlines()
    return [ln for ln in lines[since_line:] if re.search(pattern, ln)]


def log_len(work):
    return len(open(os.path.join(work, "walua.log"), errors="replace").read().splitlines())


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": round(statistics.median(xs), 2), "max": round(max(xs), 2),
            "min": round(min(xs), 2)}


# ---------------------------------------------------------------- checks

class Checker:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.key = open(args.key_file).read().strip()
        self.odoo = Odoo(self.key)
        self.results = {}
        self.delays = {"commit_to_queued": {}, "commit_to_graph": {}}
        self.procs = []

    def note(self, check, **kv):
        self.results.setdefault(check, {}).update(kv)
        log(f"[{check}]", json.dumps(kv, ensure_ascii=False)[:1500])

    def delay(self, check, phone, kind, key, t_commit):
        q = queued_times(self.walua, phone).get((kind, key))
        g = first_send(self.rec, kind, key)
        dq = (min(q) - t_commit) if q else None
        dg = (g - t_commit) if g else None
        self.delays["commit_to_queued"].setdefault(check, []).append(dq)
        self.delays["commit_to_graph"].setdefault(check, []).append(dg)
        return dq, dg

    # -- setup
    def setup(self):
        a = self.args
        if not a.no_reset:
            log("resetting the Odoo database to fresh demo data")
            subprocess.run(["/work/odoo/reset-db.sh"], check=True, capture_output=True)
        if not self.odoo.up():
            subprocess.run(["/work/odoo/start.sh"], check=True)
        if "7" in a.checks:
            # A real deployment: quotations older than walua's first start (and its rescan window).
            subprocess.run(["psql", "-q", "-d", DB, "-c",
                            "UPDATE sale_order SET create_date = create_date - interval '1 day', "
                            "write_date = write_date - interval '1 day' WHERE id <= 19"], check=True)
            # S00020 keeps its date: the newest order when walua starts, so the others are
            # older than its first cursor's rescan window (not taken as seen).
        for sub in ("store", "scripts"):
            shutil.rmtree(os.path.join(self.work, sub), ignore_errors=True)
        os.makedirs(self.work, exist_ok=True)
        shutil.copytree(os.path.join(a.src, "scripts"), os.path.join(self.work, "scripts"))
        for f in ("graph.jsonl", "walua.log", "fake-graph.log", "fake-graph.url", "results.json"):
            try:
                os.remove(os.path.join(self.work, f))
            except FileNotFoundError:
                pass
        url_file = os.path.join(self.work, "fake-graph.url")
        fg = subprocess.Popen([os.path.join(a.bin_dir, "walua-fake-graph"), "--token", ACCESS,
                               "--url-file", url_file, "--duration", "86400",
                               "--stats", os.path.join(self.work, "fake-graph.stats")],
                              stdout=open(os.path.join(self.work, "fake-graph.log"), "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(fg)
        wait_for(lambda: os.path.exists(url_file) and open(url_file).read(), 20)
        fake_url = open(url_file).read().strip()
        fake_port = int(re.search(r":(\d+)/", fake_url).group(1))
        self.rec = Recorder(os.path.join(self.work, "graph.jsonl"))
        proxy_port = start_proxy(fake_port, self.rec)
        self.walua = Walua(a, self.work, f"http://127.0.0.1:{proxy_port}/v21.0")
        # Session-less portal links (the invoice PDF) need Odoo to pick one database by itself.
        url = self.odoo.call("account.move", "get_portal_url", [[1]], {"report_type": "pdf", "download": True})
        try:
            with urllib.request.urlopen(ODOO_URL + url, timeout=120) as r:
                pdf_ok = r.read(5) == b"%PDF-"
        except urllib.error.HTTPError:
            pdf_ok = False
        if not pdf_ok:
            log("WARNING: Odoo's portal PDF link does not answer a PDF without a session: start Odoo "
                "with --db-filter '^walua$' (a plain 'walua' also matches walua_fresh)")
        self.walua.write_config(a.key_file)
        log("config", self.walua.conf, "fake Graph", fake_url, "proxy", proxy_port)
        self.walua.start()
        started = wait_for(lambda: len(log_lines(self.work, "odoo hook cursor started")) >= 4, 30)
        self.note("setup", hooks_started=len(log_lines(self.work, "odoo hook cursor started")),
                  rss_kb_start=self.walua.rss_kb(), health=self.walua.health()["status"])
        if not started:
            raise SystemExit("the 4 hooks did not start; see walua.log")
        canonical = "env.phone.normalize" in open(os.path.join(a.src, "scripts", "lib", "boutique.lua")).read()
        self.phones = {p: phone_of(self.odoo, p, canonical) for p in (P_MASS, P_LATE_A, P_LATE_B, P_FIRST, P_INVOICE)}
        for p, ph in self.phones.items():
            self.walua.webhook(inbound(ph))
        time.sleep(2)
        open_ = [ph for ph in self.phones.values() if self.walua.messages(ph)]
        commit = ""
        if os.path.exists(os.path.join(a.src, "COMMIT")):
            commit = open(os.path.join(a.src, "COMMIT")).read().strip()
        self.note("setup", windows_opened=open_, commit=commit or a.src)

    def quiet(self, seconds=6):
        """Waits until no Graph request has arrived for `seconds`."""
        def still():
            s = self.rec.snapshot()
            return not s or time.time() - s[-1]["t"] >= seconds
        wait_for(still, 900, 0.5)

    def order(self, partner, qty=1):
        return self.odoo.call("sale.order", "create", [{
            "partner_id": partner, "order_line": [[0, 0, {"product_id": PRODUCT, "product_uom_qty": qty}]]}])

    def names(self, ids, model="sale.order"):
        return {r["id"]: r["name"] for r in self.odoo.call(model, "read", [ids], {"fields": ["name"]})}

    # -- 1
    def check1(self):
        n = self.args.orders
        phone = self.phones[P_MASS]
        base = len(sends(self.rec))
        vals = [{"partner_id": P_MASS, "order_line": [[0, 0, {"product_id": PRODUCT, "product_uom_qty": i % 5 + 1}]]}
                for i in range(n)]
        t0 = time.time()
        ids = self.odoo.call("sale.order", "create", [vals])
        t_commit = time.time()
        names = self.names(ids)
        wd = self.odoo.call("sale.order", "read", [ids], {"fields": ["write_date"]})
        self.note("1", created=len(ids), ids=f"{min(ids)}..{max(ids)}", rpc_seconds=round(t_commit - t0, 2),
                  distinct_write_dates=sorted({r["write_date"] for r in wd}))
        # Wait until every creation message is queued in walua (the hook ran for all).
        def all_queued():
            q = queued_times(self.walua, phone)
            return sum(1 for nm in names.values() if ("created", nm) in q) == n
        ok = wait_for(all_queued, 120, 1)
        t_all_queued = time.time()
        self.note("1", all_creation_messages_queued=bool(ok), after_s=round(t_all_queued - t_commit, 1))
        # Confirm the oldest of them now (the write hook must not be stuck on that second).
        older = min(ids)
        self.odoo.call("sale.order", "action_confirm", [[older]])
        t_conf = time.time()
        self.note("1", confirmed=names[older], confirmed_at=round(t_conf, 3))
        want = {("created", nm) for nm in names.values()} | {("state:Confirmée", names[older])}
        def done():
            got = {(k, key) for t, k, key, to, e in sends(self.rec)[base:]}
            return want <= got
        ok = wait_for(done, 1200, 2)
        self.quiet(15)
        got = sends(self.rec)[base:]
        c = count_by((k, key) for t, k, key, to, e in got)
        created = {nm: c.get(("created", nm), 0) for nm in names.values()}
        dup = {f"{k}:{key}": v for (k, key), v in c.items() if v > 1}
        missing = sorted(nm for nm, v in created.items() if v == 0)
        conf_n = c.get(("state:Confirmée", names[older]), 0)
        other = {f"{k}:{key}": v for (k, key), v in c.items() if k not in ("created",) and
                 not (k == "state:Confirmée" and key == names[older])}
        # Delays: each creation message (commit = the create() RPC's return).
        for nm in names.values():
            self.delay("1-created", phone, "created", nm, t_commit)
        dq, dg = self.delay("1-confirm", phone, "state:Confirmée", names[older], t_conf)
        ts = [t for t, k, key, to, e in got if k == "created"]
        self.note("1", ok=bool(ok) and not dup and not missing and conf_n == 1,
                  creation_messages=sum(created.values()), distinct_orders=sum(1 for v in created.values() if v),
                  missing=missing, duplicates=dup, confirmee_count=conf_n, other_sends=other,
                  first_creation_graph_s=round(min(ts) - t_commit, 1) if ts else None,
                  last_creation_graph_s=round(max(ts) - t_commit, 1) if ts else None,
                  confirm_queued_after_s=round(dq, 2) if dq is not None else None,
                  confirm_graph_after_s=round(dg, 2) if dg is not None else None,
                  rss_kb=self.walua.rss_kb())

    # -- 2
    def check2(self):
        base = len(sends(self.rec))
        a = self.order(P_LATE_A)
        b = self.order(P_LATE_B)
        names = self.names([a, b])
        # Let walua see both as drafts first (buttons sent), so this is a plain state change.
        wait_for(lambda: all(("created", names[i]) in queued_times(self.walua, self.phones[p])
                             for i, p in ((a, P_LATE_A), (b, P_LATE_B))), 60, 1)
        time.sleep(3)
        # The transaction starts (and so stamps write_date) 3 s before A is confirmed, and
        # commits 8 s after: A's write_date is ~11 s older than its commit, older than B's.
        script = (
            "import time\n"
            "env.cr.execute('SELECT 1'); print('BEGIN', env.cr.now(), time.time(), flush=True); time.sleep(3)\n"
            f"o = env['sale.order'].browse({a}); o.action_confirm(); env.flush_all(); print('CONFIRMED', time.time(), flush=True)\n"
            "time.sleep(8)\n"
            "env.cr.commit(); print('COMMITTED', time.time(), flush=True)\n"
        )
        out_path = os.path.join(self.work, "late-shell.out")
        shell = subprocess.Popen(
            [self.args.odoo_python, "odoo-bin", "shell", "--addons-path=addons,odoo/addons", "-d", DB,
             "--no-http", "--log-level=warn"],
            cwd=self.args.odoo_src, stdin=subprocess.PIPE, stdout=open(out_path, "w"),
            stderr=subprocess.STDOUT, text=True)
        shell.stdin.write(script)
        shell.stdin.close()
        def marker(m):
            for ln in open(out_path, errors="replace"):
                mm = re.search(m + r" ([0-9.]+)", ln)
                if mm:
                    return float(mm.group(1))
            return None
        t_a_confirmed = wait_for(lambda: marker("CONFIRMED"), 120, 0.1)
        if t_a_confirmed is None:
            raise SystemExit("odoo-bin shell did not confirm A; see " + out_path)
        t0 = time.time()
        self.odoo.call("sale.order", "action_confirm", [[b]])
        t_b = time.time()
        shell.wait(120)
        t_a = marker("COMMITTED")
        rows = self.odoo.call("sale.order", "read", [[a, b]], {"fields": ["name", "state", "write_date"]})
        self.note("2", A=names[a], B=names[b], write_dates={r["name"]: r["write_date"] for r in rows},
                  b_rpc_seconds=round(t_b - t0, 2), a_committed_after_b_s=round(t_a - t_b, 2))
        want = {("state:Confirmée", names[a]), ("state:Confirmée", names[b])}
        ok = wait_for(lambda: want <= {(k, key) for t, k, key, to, e in sends(self.rec)[base:]}, 60, 0.5)
        self.quiet(8)
        got = sends(self.rec)[base:]
        c = count_by((k, key) for t, k, key, to, e in got)
        dqa, dga = self.delay("2", self.phones[P_LATE_A], "state:Confirmée", names[a], t_a)
        dqb, dgb = self.delay("2", self.phones[P_LATE_B], "state:Confirmée", names[b], t_b)
        ta, tb = first_send(self.rec, "state:Confirmée", names[a]), first_send(self.rec, "state:Confirmée", names[b])
        self.note("2", ok=bool(ok) and c.get(("state:Confirmée", names[a])) == 1 and c.get(("state:Confirmée", names[b])) == 1,
                  counts={f"{k}:{key}": v for (k, key), v in c.items()},
                  A_graph_after_its_commit_s=round(dga, 2) if dga is not None else None,
                  A_arrived_after_commit=bool(ta and ta >= t_a),
                  B_graph_after_its_commit_s=round(dgb, 2) if dgb is not None else None,
                  A_queued_after_commit_s=round(dqa, 2) if dqa is not None else None,
                  B_queued_after_commit_s=round(dqb, 2) if dqb is not None else None)

    # -- 3
    def check3(self):
        base = len(sends(self.rec))
        rows = []
        for i in range(3):
            time.sleep(0.7 * i)
            oid = self.order(P_FIRST, qty=i + 1)
            t_created = time.time()
            self.odoo.call("sale.order", "action_confirm", [[oid]])
            t_conf = time.time()
            rows.append((oid, t_created, t_conf))
        names = self.names([r[0] for r in rows])
        want = set()
        for oid, _, _ in rows:
            want |= {("created", names[oid]), ("state:Confirmée", names[oid])}
        ok = wait_for(lambda: want <= {(k, key) for t, k, key, to, e in sends(self.rec)[base:]}, 60, 0.5)
        self.quiet(8)
        got = sends(self.rec)[base:]
        c = count_by((k, key) for t, k, key, to, e in got)
        per = {}
        for oid, tc, tf in rows:
            nm = names[oid]
            _, dg1 = self.delay("3", self.phones[P_FIRST], "created", nm, tc)
            _, dg2 = self.delay("3", self.phones[P_FIRST], "state:Confirmée", nm, tf)
            per[nm] = {"created": c.get(("created", nm), 0), "confirmee": c.get(("state:Confirmée", nm), 0),
                       "create_to_confirm_rpc_s": round(tf - tc, 3),
                       "buttons_graph_s": round(dg1, 2) if dg1 is not None else None,
                       "confirmee_graph_s": round(dg2, 2) if dg2 is not None else None}
        self.first_sight_order = rows[0][0]
        self.first_sight_name = names[rows[0][0]]
        self.note("3", ok=bool(ok) and all(v["created"] == 1 and v["confirmee"] == 1 for v in per.values()),
                  orders=per, other={f"{k}:{key}": v for (k, key), v in c.items()
                                     if key not in names.values()})

    # -- 4
    def invoice(self, partner, amount):
        return self.odoo.call("account.move", "create", [{
            "move_type": "out_invoice", "partner_id": partner,
            "invoice_line_ids": [[0, 0, {"product_id": PRODUCT, "quantity": 1, "price_unit": amount}]]}])

    def pay(self, inv, amount):
        ctx = {"context": {"active_model": "account.move", "active_ids": [inv]}}
        wiz = self.odoo.call("account.payment.register", "create", [{"amount": amount}], ctx)
        self.odoo.call("account.payment.register", "action_create_payments", [[wiz]], ctx)

    def check4(self):
        phone = self.phones[P_INVOICE]
        base = len(sends(self.rec))
        base_all = len(self.rec.snapshot())
        inv1 = self.invoice(P_INVOICE, 1000)
        time.sleep(5)   # two polls: walua sees it as a draft first
        self.odoo.call("account.move", "action_post", [[inv1]])
        t_post1 = time.time()
        inv2 = self.invoice(P_INVOICE, 2000)
        self.odoo.call("account.move", "action_post", [[inv2]])   # first sight: posted
        t_post2 = time.time()
        nm = self.names([inv1, inv2], "account.move")
        ok_pdf = wait_for(lambda: first_send(self.rec, "invoice_pdf", nm[inv1]) and
                          first_send(self.rec, "invoice_pdf", nm[inv2]), 180, 0.5)
        time.sleep(6)
        self.pay(inv1, 400)
        t_pay1 = time.time()
        ok_p1 = wait_for(lambda: first_send(self.rec, "payment_partial", nm[inv1]), 60, 0.5)
        time.sleep(3)
        residual = self.odoo.call("account.move", "read", [[inv1]], {"fields": ["amount_residual"]})[0]["amount_residual"]
        self.pay(inv1, residual)
        t_pay2 = time.time()
        ok_p2 = wait_for(lambda: first_send(self.rec, "payment_full", nm[inv1]), 60, 0.5)
        self.quiet(10)
        got = sends(self.rec)[base:]
        c = count_by((k, key) for t, k, key, to, e in got)
        uploads = [e for e in self.rec.snapshot()[base_all:] if classify(e)[0] == "upload"]
        d = {}
        for label, kind, key, t in (("pdf_" + nm[inv1], "invoice_pdf", nm[inv1], t_post1),
                                    ("pdf_first_sight_" + nm[inv2], "invoice_pdf", nm[inv2], t_post2),
                                    ("partial_payment", "payment_partial", nm[inv1], t_pay1),
                                    ("final_payment", "payment_full", nm[inv1], t_pay2)):
            _, dg = self.delay("4", phone, kind, key, t)
            d[label] = round(dg, 2) if dg is not None else None
        inv = self.odoo.call("account.move", "read", [[inv1, inv2]],
                             {"fields": ["name", "state", "payment_state", "amount_residual"]})
        self.note("4", ok=bool(ok_pdf and ok_p1 and ok_p2) and all(v == 1 for v in c.values()),
                  counts={f"{k}:{key}": v for (k, key), v in c.items()},
                  uploads=[u.get("upload") for u in uploads], graph_delay_s=d, invoices=inv)

    # -- 5
    def check5(self):
        w = self.walua
        phone = self.phones[P_FIRST]
        oid = getattr(self, "first_sight_order", None) or self.order(P_FIRST)
        oname = self.names([oid])[oid]
        # Its buttons must have been sent to this customer first (walua only acts on a
        # button it sent to the contact who taps it).
        wait_for(lambda: first_send(self.rec, "created", oname), 30, 0.5)
        base = len(sends(self.rec))
        l0 = log_len(self.work)
        # SIGTERM first; Odoo 16's threaded server notices it only when its main loop wakes
        # (up to 60 s), so SIGKILL after 5 s (PostgreSQL stays up).
        pid = int(open("/work/odoo/odoo.pid").read())
        os.kill(pid, signal.SIGTERM)
        if not wait_for(lambda: not self.odoo.up(), 5, 0.2):
            os.kill(pid, signal.SIGKILL)
            if not wait_for(lambda: not self.odoo.up(), 20, 0.2):
                raise SystemExit(f"Odoo (pid {pid} in /work/odoo/odoo.pid) still answers")
        t_down = time.time()
        try:
            self.odoo.call("sale.order", "action_confirm", [[oid]], timeout=5)
            rpc = "Odoo still answered!"
        except Exception as e:
            rpc = f"refused: {type(e).__name__}: {e}"[:120]
        time.sleep(3)
        w.webhook(inbound(phone, "button", f"btn_order_details_{oid}", "Voir détail"))
        t_tap = time.time()
        time.sleep(4)
        h1 = w.health()
        parked1 = w.cli("parked", "list", "--all")
        ok_fb = wait_for(lambda: [s for s in sends(self.rec)[base:] if s[1] == "text" and s[3] == phone], 60, 0.5)
        t_fb = ok_fb[0][0] if ok_fb else None
        fallback_text = ok_fb[0][2] if ok_fb else None
        time.sleep(2)
        # walua dies mid-way (fallback sent, the tap still waiting for Odoo) and comes back.
        rss_before_kill = w.rss_kb()
        w.kill9()
        t_kill = time.time()
        w.start()
        t_restart = time.time()
        time.sleep(8)
        h2 = w.health()
        parked2 = w.cli("parked", "list", "--all")
        time.sleep(2)
        subprocess.run(["/work/odoo/start.sh"], check=True, capture_output=True)
        t_up = time.time()
        ok_det = wait_for(lambda: first_send(self.rec, "details", oname), 240, 0.5)
        t_det = first_send(self.rec, "details", oname)
        self.quiet(10)
        fb = [m for m in w.messages(phone) if m.get("origin") == "walua:fallback_reply"]
        h3 = w.health()
        parked3 = w.cli("parked", "list", "--all")
        got = sends(self.rec)[base:]
        c = count_by((k, key) for t, k, key, to, e in got)
        poll_warns = len(log_lines(self.work, "odoo hook poll failed", l0))
        held = log_lines(self.work, r"(?i)held|transient|fallback|runs again|parked", l0)
        self.note("5", order=oname, odoo_rpc_while_down=rpc,
                  health_while_down=h1, parked_while_down=parked1,
                  fallback_after_tap_s=round(t_fb - t_tap, 2) if t_fb else None, fallback_text=fallback_text,
                  killed_at_s_after_tap=round(t_kill - t_tap, 1), rss_before_kill=rss_before_kill, restarted_in_s=round(t_restart - t_kill, 2),
                  health_after_restart=h2, parked_after_restart=parked2,
                  details_after_odoo_up_s=round(t_det - t_up, 2) if t_det else None,
                  details_after_tap_s=round(t_det - t_tap, 2) if t_det else None,
                  odoo_down_s=round(t_up - t_down, 1),
                  counts={f"{k}:{str(key)[:40]}": v for (k, key), v in c.items()},
                  ok=bool(ok_det) and c.get(("details", oname)) == 1 and
                  sum(v for (k, _), v in c.items() if k == "text") == 1,
                  fallback_in_store=[(m.get("id"), m.get("status"), (m.get("error") or {}).get("title"))
                                     for m in fb],
                  rss_kb=w.rss_kb(),
                  health_after=h3["status"], problems_after=h3.get("problems"), parked_after=parked3,
                  poll_failed_log_lines=poll_warns, log_excerpt=held[:12])

    # -- 7 (informational): a quotation older than walua's first start is confirmed
    def check7(self):
        base = len(sends(self.rec))
        l0 = log_len(self.work)
        row = self.odoo.call("sale.order", "read", [[2]], {"fields": ["name", "state", "partner_id", "create_date"]})[0]
        self.odoo.call("sale.order", "action_confirm", [[2]])
        time.sleep(10)
        got = sends(self.rec)[base:]
        self.note("7", order=row["name"], partner=row["partner_id"], created=row["create_date"],
                  sends=[(k, key) for t, k, key, to, e in got],
                  hook_log=[ln[-200:] for ln in log_lines(self.work, "sale_order_state", l0)][:5])

    def run(self):
        todo = [c.strip() for c in self.args.checks.split(",")]
        try:
            self.setup()
            for c in todo:
                log(f"===== check {c}")
                getattr(self, "check" + c)()
                self.quiet(5)
            # 6: measures
            d = {k: {c: stats(v) for c, v in per.items()} for k, per in self.delays.items()}
            first3 = [x for c, v in self.delays["commit_to_graph"].items() if c in ("1-confirm", "2", "3") for x in v]
            self.note("6", delays=d, state_and_first_sight_commit_to_graph=stats(first3),
                      rss_kb=self.walua.rss_kb(), graph_requests=len(self.rec.snapshot()),
                      graph_non_200=[(e["path"], e["status"], e.get("answer")) for e in self.rec.snapshot()
                                     if e["status"] != 200][:10],
                      walua_warn_error_lines=len(log_lines(self.work, r" (WARN|ERROR) ")))
        finally:
            json.dump(self.results, open(os.path.join(self.work, "results.json"), "w"), indent=2,
                      ensure_ascii=False, default=str)
            if not self.args.keep_walua:
                if hasattr(self, "walua"):
                    self.walua.stop()
                for p in self.procs:
                    p.terminate()
            if not self.odoo.up():
                subprocess.run(["/work/odoo/start.sh"])
        ok = {c: v.get("ok") for c, v in self.results.items() if "ok" in v}
        log("RESULT", json.dumps(ok), "details:", os.path.join(self.work, "results.json"))
        return 0 if all(ok.values()) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/work/odoo/hookcheck")
    p.add_argument("--bin-dir", default=os.path.join(REPO, "target", "debug"))
    p.add_argument("--src", default=REPO, help="the source tree walua was built from (conf/, scripts/)")
    p.add_argument("--checks", default="1,2,3,4,5,7")
    p.add_argument("--no-reset", action="store_true")
    p.add_argument("--orders", type=int, default=105)
    p.add_argument("--odoo-src", default="/work/odoo/src")
    p.add_argument("--odoo-python", default="/work/odoo/venv/bin/python")
    p.add_argument("--key-file", default="/work/odoo/apikey")
    p.add_argument("--keep-walua", action="store_true")
    a = p.parse_args()
    a.work = os.path.abspath(a.work)
    a.bin_dir = os.path.abspath(a.bin_dir)
    a.src = os.path.abspath(a.src)
    sys.exit(Checker(a).run())


if __name__ == "__main__":
    main()
