#!/usr/bin/env python3
"""Record JSON-RPC exchanges with a real Odoo 16 as transcripts for tests/fixtures/odoo16.

Python 3 standard library only. Each call is POSTed to <url>/jsonrpc (service "object",
method "execute_kw", db, uid 2, the API key) and saved as one JSON file in the format of the
existing fixtures:

    {"description": ..., "request": {"method", "path", "headers", "body"},
     "response": {"status", "headers": {"content-type", "content-length"}, "body"}}

The API key is replaced by the placeholder ODOO_API_KEY in the saved request (and the
recorder refuses to save a file that still contains it). JSON-RPC ids count from 1 in
recording order and the file names carry the same number, so that replay order = file order.

Usage (the real Odoo as /work/shared/odoo-dev.md starts it, see README.md beside this file):

    python3 dev/odoo/record.py session2 --out tests/fixtures/odoo16/session2
    python3 dev/odoo/record.py call sale.order search_read '[[["state","=","draft"]]]' \
        '{"fields": ["name"], "limit": 2}'            # prints one exchange, saves nothing

Options: --url (http://127.0.0.1:8069), --db (walua), --key-file (/work/odoo/apikey),
--pg-db: a PostgreSQL database to read write_date with its microseconds after the writing
steps (psql, as the local superuser); the values go in the descriptions, because RPC only
shows whole seconds and a fake replaying the transcript needs the exact clock.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

PLACEHOLDER = "ODOO_API_KEY"
KEY_NOTE = " (the real API key is replaced by the placeholder ODOO_API_KEY in the saved request)"


class Recorder:
    def __init__(self, url, db, key, out=None, pg_db=None):
        self.url = url.rstrip("/")
        self.db = db
        self.key = key
        self.out = out
        self.pg_db = pg_db
        self.next_id = 1

    def post(self, path, body):
        """POSTs a JSON body; returns (status, headers dict, raw bytes, seconds taken)."""
        data = json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        start = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                status, headers, raw = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, raw = e.code, e.headers, e.read()
        took = time.monotonic() - start
        return status, headers, raw, took

    def execute_kw(self, name, description, model, method, args, kwargs=None):
        """One execute_kw call, saved as `<NN>-<name>.json`; returns the answer's body."""
        rpc_id = self.next_id
        self.next_id += 1
        call_args = [self.db, 2, self.key, model, method, args]
        if kwargs is not None:
            call_args.append(kwargs)
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": "object", "method": "execute_kw", "args": call_args},
            "id": rpc_id,
        }
        status, headers, raw, took = self.post("/jsonrpc", body)
        answer = json.loads(raw)
        saved_body = json.loads(json.dumps(body))
        saved_body["params"]["args"][2] = PLACEHOLDER
        transcript = {
            "description": description + KEY_NOTE,
            "request": {
                "method": "POST",
                "path": "/jsonrpc",
                "headers": {"Content-Type": "application/json"},
                "body": saved_body,
            },
            "response": {
                "status": status,
                "headers": {
                    "content-type": headers.get("Content-Type"),
                    "content-length": headers.get("Content-Length", str(len(raw))),
                },
                "body": answer,
            },
        }
        shown = {k: v for k, v in answer.items() if k != "error"}
        if "error" in answer:
            err = answer["error"]
            shown["error"] = {k: v for k, v in err.items() if k != "data"}
            shown["error"]["data"] = {k: v for k, v in err["data"].items() if k != "debug"}
        text = json.dumps(shown)
        print(f"{rpc_id:02d} {model}.{method} {took:.3f}s -> {text[:400]}", file=sys.stderr)
        self.last_took = took
        if self.out:
            self.save(f"{rpc_id:02d}-{name}.json", transcript)
        return answer

    def save(self, filename, transcript):
        text = json.dumps(transcript, indent=2, ensure_ascii=False) + "\n"
        if self.key in text:
            raise SystemExit(f"{filename}: the API key would be saved; refusing")
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, filename), "w", encoding="utf-8") as f:
            f.write(text)

    def amend(self, rpc_id, extra):
        """Appends a sentence to the description of the saved transcript with this id."""
        if not self.out:
            return
        for filename in sorted(os.listdir(self.out)):
            if filename.startswith(f"{rpc_id:02d}-"):
                path = os.path.join(self.out, filename)
                with open(path, encoding="utf-8") as f:
                    transcript = json.load(f)
                d = transcript["description"]
                assert d.endswith(KEY_NOTE)
                transcript["description"] = d[: -len(KEY_NOTE)] + ". " + extra + KEY_NOTE
                self.save(filename, transcript)

    def pg_write_dates(self, table, ids):
        """write_date with microseconds, straight from PostgreSQL (None without --pg-db)."""
        if not self.pg_db:
            return None
        sql = f"SELECT DISTINCT write_date FROM {table} WHERE id IN ({','.join(map(str, ids))}) ORDER BY 1"
        out = subprocess.run(
            ["psql", "-d", self.pg_db, "-Atc", sql], check=True, capture_output=True, text=True
        ).stdout
        return [line for line in out.splitlines() if line]


def result(answer):
    if "result" not in answer:
        raise SystemExit(f"expected a result: {answer}")
    return answer["result"]


def session2(rec):
    """The second recording session: bulk create + keyset paging, lock/unlock, invoices."""
    # a. One create of 105 orders for Deco Addict (id 10, as in 10-sale-order-create).
    vals = [{"partner_id": 10, "client_order_ref": f"walua-bulk-{i:03d}"} for i in range(1, 106)]
    ids = result(
        rec.execute_kw(
            "sale-order-create-105",
            "execute_kw sale.order create with a list of 105 value dicts in one call (partner_id 10, "
            "client_order_ref walua-bulk-001..105, no lines): returns the list of the new ids",
            "sale.order",
            "create",
            [vals],
        )
    )
    create_took = rec.last_took
    precise = rec.pg_write_dates("sale_order", ids)
    note = f"The call took {create_took:.2f} s on the real Odoo"
    if precise:
        note += f"; PostgreSQL keeps one write_date for all 105: {', '.join(precise)}"
    rec.amend(1, note)
    first, last = ids[0], ids[-1]
    rows = result(
        rec.execute_kw(
            "sale-order-read-bulk-ends",
            "read the first and the last order of the bulk create: consecutive names, one "
            "create_date/write_date (the transaction's start, truncated to the second)",
            "sale.order",
            "read",
            [[first, last]],
            {"fields": ["name", "state", "create_date", "write_date"]},
        )
    )
    w = rows[0]["write_date"]
    page1 = result(
        rec.execute_kw(
            "sale-order-write-date-ge-page1",
            f"first page of an incremental sync: write_date >= '{w}' (the bulk create's second), "
            "order 'write_date asc, id asc', limit 100: the 105 orders share that second",
            "sale.order",
            "search_read",
            [[["write_date", ">=", w]]],
            {"fields": ["id", "write_date"], "order": "write_date asc, id asc", "limit": 100},
        )
    )
    last_id = page1[-1]["id"]
    rec.execute_kw(
        "sale-order-keyset-page2",
        f"keyset page after (write_date '{w}', id {last_id}): ['|', write_date > W, '&', "
        "write_date = W, id > LASTID], same order and limit. PostgreSQL compares the stored "
        "microseconds with W (a whole second), so 'write_date > W' matches every record of "
        "that second and 'write_date = W' none",
        "sale.order",
        "search_read",
        [["|", ["write_date", ">", w], "&", ["write_date", "=", w], ["id", ">", last_id]]],
        {"fields": ["id", "write_date"], "order": "write_date asc, id asc", "limit": 100},
    )
    rec.execute_kw(
        "sale-order-write-date-eq-count",
        f"search_count write_date = '{w}' (the second RPC reports): none, PostgreSQL keeps microseconds",
        "sale.order",
        "search_count",
        [[["write_date", "=", w]]],
    )
    rec.execute_kw(
        "sale-order-write-date-gt-count",
        f"search_count write_date > '{w}': all 105 of the bulk create (microseconds above the second)",
        "sale.order",
        "search_count",
        [[["write_date", ">", w]]],
    )

    # c. Confirm, lock (action_done), cancel, confirm again, unlock: the demo draft S00002.
    order = 2
    fields = {"fields": ["name", "state", "write_date"]}

    def read_order(name, what):
        rec.execute_kw(name, f"read S00002 {what}", "sale.order", "read", [[order]], fields)

    def precise_order(rpc_id):
        p = rec.pg_write_dates("sale_order", [order])
        if p:
            rec.amend(rpc_id, f"PostgreSQL keeps write_date {p[0]}")

    rec.execute_kw(
        "sale-order-action-confirm",
        "execute_kw sale.order action_confirm on the demo draft S00002 (id 2): True",
        "sale.order",
        "action_confirm",
        [[order]],
    )
    precise_order(rec.next_id - 1)
    read_order("sale-order-read-after-confirm", "after action_confirm: state 'sale'")
    rec.execute_kw(
        "sale-order-action-done",
        "execute_kw sale.order action_done on the confirmed S00002: Odoo 16 locks it (state "
        "'done', shown as 'Locked'; there is no 'locked' field in 16). The method returns None, "
        "so the JSON-RPC answer has no 'result' key",
        "sale.order",
        "action_done",
        [[order]],
    )
    precise_order(rec.next_id - 1)
    read_order("sale-order-read-after-done", "after action_done: state 'done'")
    rec.execute_kw(
        "sale-order-action-cancel-done",
        "execute_kw sale.order action_cancel on the locked (done) S00002: no UserError in 16.0; "
        "like any order that is not a draft it returns the sale.order.cancel wizard action",
        "sale.order",
        "action_cancel",
        [[order]],
    )
    read_order("sale-order-read-after-cancel-done", "after action_cancel on the locked order: still 'done', write_date unchanged")
    rec.execute_kw(
        "sale-order-action-confirm-done",
        "execute_kw sale.order action_confirm on the locked (done) S00002: a UserError. The two "
        "states are joined from a Python set ({'done', 'cancel'}), so their order depends on the "
        "Odoo process's string hash seed and can differ after a restart",
        "sale.order",
        "action_confirm",
        [[order]],
    )
    rec.execute_kw(
        "sale-order-action-unlock",
        "execute_kw sale.order action_unlock on the locked S00002: back to state 'sale'; returns "
        "None, so no 'result' key",
        "sale.order",
        "action_unlock",
        [[order]],
    )
    precise_order(rec.next_id - 1)
    read_order("sale-order-read-after-unlock", "after action_unlock: state 'sale'")

    # d. A posted customer invoice back to draft, then cancelled.
    inv = result(
        rec.execute_kw(
            "invoice-search-posted",
            "helper: the first posted customer invoice",
            "account.move",
            "search_read",
            [[["move_type", "=", "out_invoice"], ["state", "=", "posted"]]],
            {"fields": ["name", "state"], "order": "id asc", "limit": 1},
        )
    )[0]["id"]
    inv_fields = {"fields": ["name", "state", "payment_state"]}
    rec.execute_kw(
        "invoice-button-draft",
        f"execute_kw account.move button_draft on the posted invoice id {inv}: returns None, so no 'result' key",
        "account.move",
        "button_draft",
        [[inv]],
    )
    rec.execute_kw(
        "invoice-read-after-draft",
        "read the invoice after button_draft: state 'draft', the name is kept",
        "account.move",
        "read",
        [[inv]],
        inv_fields,
    )
    rec.execute_kw(
        "invoice-button-cancel",
        f"execute_kw account.move button_cancel on the draft invoice id {inv}: returns None, so no 'result' key",
        "account.move",
        "button_cancel",
        [[inv]],
    )
    rec.execute_kw(
        "invoice-read-after-cancel",
        "read the invoice after button_cancel: state 'cancel'",
        "account.move",
        "read",
        [[inv]],
        inv_fields,
    )

    # e. Missing records.
    rec.execute_kw(
        "error-write-missing",
        "execute_kw sale.order write on id 999999, which does not exist: MissingError",
        "sale.order",
        "write",
        [[999999], {"client_order_ref": "nope"}],
    )
    rec.execute_kw(
        "read-missing",
        "execute_kw sale.order read of id 999999, which does not exist: no error, an empty list "
        "(read skips records that do not exist)",
        "sale.order",
        "read",
        [[999999]],
        {"fields": ["name"]},
    )
    rec.execute_kw(
        "read-some-missing",
        "execute_kw sale.order read of ids 999999 and 2: only S00002 comes back",
        "sale.order",
        "read",
        [[999999, 2]],
        {"fields": ["name"]},
    )
    rec.execute_kw(
        "error-unlink-missing",
        "execute_kw sale.order unlink of id 999999, which does not exist: MissingError",
        "sale.order",
        "unlink",
        [[999999]],
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8069")
    p.add_argument("--db", default="walua")
    p.add_argument("--key-file", default="/work/odoo/apikey")
    p.add_argument("--pg-db", default=None)
    sub = p.add_subparsers(dest="cmd", required=True)
    s2 = sub.add_parser("session2", help="record tests/fixtures/odoo16/session2 (on a fresh database)")
    s2.add_argument("--out", required=True)
    one = sub.add_parser("call", help="one execute_kw call, printed, not saved")
    one.add_argument("model")
    one.add_argument("method")
    one.add_argument("args", help="JSON list")
    one.add_argument("kwargs", nargs="?", help="JSON object")
    a = p.parse_args()
    with open(a.key_file, encoding="utf-8") as f:
        key = f.read().strip()
    if a.cmd == "session2":
        if os.path.isdir(a.out) and os.listdir(a.out):
            raise SystemExit(f"{a.out} is not empty: record into an empty folder")
        session2(Recorder(a.url, a.db, key, out=a.out, pg_db=a.pg_db))
    else:
        rec = Recorder(a.url, a.db, key)
        kwargs = json.loads(a.kwargs) if a.kwargs else None
        answer = rec.execute_kw("call", "", a.model, a.method, json.loads(a.args), kwargs)
        print(json.dumps(answer, indent=2))


if __name__ == "__main__":
    main()
