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
    python3 dev/odoo/record.py --pg-db walua chatter --out tests/fixtures/odoo16/chatter
    python3 dev/odoo/record.py call sale.order search_read '[[["state","=","draft"]]]' \
        '{"fields": ["name"], "limit": 2}'            # prints one exchange, saves nothing

Options: --url (http://127.0.0.1:8069), --db (walua), --key-file (/work/odoo/apikey),
--pg-db: a PostgreSQL database to read write_date with its microseconds after the writing
steps (psql, as the local superuser); the values go in the descriptions, because RPC only
shows whole seconds and a fake replaying the transcript needs the exact clock.
"""

import argparse
import base64
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
        # to_char: always six digits of microseconds (PostgreSQL's text form drops trailing
        # zeros, "…17.23943", which the replay test does not read as a time).
        sql = (
            "SELECT DISTINCT to_char(write_date, 'YYYY-MM-DD HH24:MI:SS.US') FROM "
            f"{table} WHERE id IN ({','.join(map(str, ids))}) ORDER BY 1"
        )
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


PDF_BYTES = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
BODY = "<p>Message WhatsApp envoyé … &lt;b&gt;échappé&lt;/b&gt;<br>2e ligne</p>"
BODY_SCRIPT = (
    '<p>Facture <b>F2026-0042</b> envoyée<br>sur WhatsApp</p><script>alert("x")</script>'
    '<p onclick="steal()">fin &amp; suite</p>'
)
BODY_PLAIN = "Texte brut : 5 < 6 & 7 > 3\nligne 2"
MSG_FIELDS = ["body", "message_type", "subtype_id", "attachment_ids", "model", "res_id", "author_id"]
PARTNER_FIELDS = [
    "id", "name", "phone", "mobile", "active", "parent_id", "is_company",
    "commercial_partner_id", "write_date", "phone_sanitized",
]


def chatter(rec):
    """Chatter (message_post, attachments, mail.message) and partners (phones, archive, companies)."""
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 1))

    # a. What is installed, and the phone fields of this database.
    rec.execute_kw(
        "modules-installed",
        "ir.module.module search_read of phone_validation, mail and sms (installed in the demo "
        "database: sale_management pulls sale_sms, hence sms and phone_validation)",
        "ir.module.module",
        "search_read",
        [[["name", "in", ["phone_validation", "mail", "sms"]]]],
        {"fields": ["name", "state"], "order": "name asc"},
    )
    rec.execute_kw(
        "partner-fields-get-phone",
        "res.partner fields_get of phone_sanitized and phone_mobile_search with attributes type "
        "and store: phone_sanitized (from phone_validation's mail.thread.phone) is a stored char, "
        "phone_mobile_search a non-stored char with a search method",
        "res.partner",
        "fields_get",
        [["phone_sanitized", "phone_mobile_search"]],
        {"attributes": ["type", "store"]},
    )
    rec.execute_kw(
        "partner-read-phone-sanitized",
        "read phone, mobile and phone_sanitized of demo partners 1, 3 and 10: without the Python "
        "module phonenumbers (not installed in this Odoo's venv) phone_validation's phone_format "
        "returns the number as given (stripped), so phone_sanitized is the first of mobile, phone "
        "that is set, unformatted: not E.164",
        "res.partner",
        "read",
        [[1, 3, 10]],
        {"fields": ["name", "phone", "mobile", "phone_sanitized"]},
    )
    rec.execute_kw(
        "partner-search-phone-sanitized-e164",
        "search_read phone_sanitized = '+15555555555' (Mitchell Admin's phone in E.164): nothing, "
        "phone_sanitized holds '+1 555-555-5555'",
        "res.partner",
        "search_read",
        [[["phone_sanitized", "=", "+15555555555"]]],
        {"fields": ["id", "name", "phone_sanitized"]},
    )
    rec.execute_kw(
        "partner-search-phone-sanitized-as-stored",
        "search_read phone_sanitized = '+1 555-555-5555' (as stored): Mitchell Admin",
        "res.partner",
        "search_read",
        [[["phone_sanitized", "=", "+1 555-555-5555"]]],
        {"fields": ["id", "name", "phone_sanitized"]},
    )
    rec.execute_kw(
        "partner-search-phone-mobile-search",
        "search_read phone_mobile_search = '+15555555555': the search method strips spaces, dots, "
        "slashes, parentheses and dashes from phone and mobile in SQL and compares with "
        "'+15555555555' or '0015555555555': Mitchell Admin, whatever the formatting",
        "res.partner",
        "search_read",
        [[["phone_mobile_search", "=", "+15555555555"]]],
        {"fields": ["id", "name", "phone"]},
    )

    # b. message_post on a sale order, an invoice and a partner.
    post = {"body": BODY, "message_type": "comment", "subtype_xmlid": "mail.mt_note"}
    m_so = result(
        rec.execute_kw(
            "sale-order-message-post",
            "sale.order message_post on the demo order S00002 (id 2), body HTML with entities, "
            "a <br> and non-ASCII, message_type comment, subtype_xmlid mail.mt_note: returns the "
            "new mail.message id (message_post is @api.returns('mail.message'))",
            "sale.order",
            "message_post",
            [[2]],
            post,
        )
    )
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
    m_inv = result(
        rec.execute_kw(
            "invoice-message-post",
            f"account.move message_post on the posted invoice id {inv}, same body: the new "
            "mail.message id",
            "account.move",
            "message_post",
            [[inv]],
            post,
        )
    )
    m_partner = result(
        rec.execute_kw(
            "partner-message-post",
            "res.partner message_post on the demo partner Deco Addict (id 10), same body",
            "res.partner",
            "message_post",
            [[10]],
            post,
        )
    )
    m_plain = result(
        rec.execute_kw(
            "sale-order-message-post-plain",
            "sale.order message_post on S00002 with a plain-text body (no tag; '<', '&', '>' "
            "and a newline in it)",
            "sale.order",
            "message_post",
            [[2]],
            {"body": BODY_PLAIN, "message_type": "comment", "subtype_xmlid": "mail.mt_note"},
        )
    )
    rec.execute_kw(
        "message-read-posted",
        "mail.message read of the three messages just posted: the body as Odoo stored it "
        "(sanitized HTML), message_type, subtype_id (mail.mt_note is id 2, 'Note'), "
        "attachment_ids, model, res_id, author_id (the user's partner)",
        "mail.message",
        "read",
        [[m_so, m_inv, m_partner, m_plain]],
        {"fields": MSG_FIELDS},
    )
    rec.execute_kw(
        "sale-order-read-after-post",
        "read S00002's message_main_attachment_id before any attachment: false",
        "sale.order",
        "read",
        [[2]],
        {"fields": ["name", "message_main_attachment_id"]},
    )
    rec.execute_kw(
        "sale-order-count-written-after-post",
        f"search_count of S00002 with write_date > '{start}' (the start of this recording) "
        "after the posts without attachment: 0, posting wrote no field of the order",
        "sale.order",
        "search_count",
        [[["id", "=", 2], ["write_date", ">", start]]],
    )

    # c. An attachment, then a message with it.
    datas = base64.b64encode(PDF_BYTES).decode()
    att = result(
        rec.execute_kw(
            "attachment-create",
            "ir.attachment create of F2026-0042.pdf (datas base64 of a small PDF) on S00002, "
            "mimetype application/pdf: the new id",
            "ir.attachment",
            "create",
            [{"name": "F2026-0042.pdf", "datas": datas, "res_model": "sale.order", "res_id": 2,
              "mimetype": "application/pdf"}],
        )
    )
    m_att = result(
        rec.execute_kw(
            "sale-order-message-post-attachment",
            f"sale.order message_post on S00002 with attachment_ids [{att}] and a body with "
            "<b>, a <script> and an onclick attribute: the new mail.message id. Odoo also sets "
            "the order's message_main_attachment_id to that PDF (it had none), a write: the "
            "order's write_date moves",
            "sale.order",
            "message_post",
            [[2]],
            {"body": BODY_SCRIPT, "message_type": "comment", "subtype_xmlid": "mail.mt_note",
             "attachment_ids": [att]},
        )
    )
    p = rec.pg_write_dates("sale_order", [2])
    if p:
        rec.amend(rec.next_id - 1, f"PostgreSQL keeps write_date {p[0]} for S00002 after it")
    rec.execute_kw(
        "message-read-with-attachment",
        "mail.message read of the message with the attachment: <script> and onclick removed "
        "by the HTML sanitizer",
        "mail.message",
        "read",
        [[m_att]],
        {"fields": MSG_FIELDS},
    )
    rec.execute_kw(
        "attachment-read",
        "ir.attachment read of the attachment after the post: still on S00002; file_size is "
        "the decoded size, datas the base64 again",
        "ir.attachment",
        "read",
        [[att]],
        {"fields": ["name", "res_model", "res_id", "mimetype", "file_size", "datas"]},
    )
    rec.execute_kw(
        "sale-order-read-after-post-attachment",
        "read S00002 after the post with a PDF: message_main_attachment_id is the PDF and "
        "write_date moved to the post's time",
        "sale.order",
        "read",
        [[2]],
        {"fields": ["name", "write_date", "message_main_attachment_id"]},
    )
    rec.execute_kw(
        "message-search-read-order",
        f"mail.message search_read of S00002's messages (model sale.order, res_id 2) from id "
        f"{m_so} on (the demo's own messages left out), newest first (mail.message _order "
        "'id desc')",
        "mail.message",
        "search_read",
        [[["model", "=", "sale.order"], ["res_id", "=", 2], ["id", ">=", m_so]]],
        {"fields": ["body", "attachment_ids"]},
    )

    # d. Errors.
    rec.execute_kw(
        "error-message-post-missing",
        "sale.order message_post on id 999999, which does not exist",
        "sale.order",
        "message_post",
        [[999999]],
        post,
    )
    rec.execute_kw(
        "error-message-post-no-chatter",
        "res.country message_post: res.country has no chatter (no mail.thread)",
        "res.country",
        "message_post",
        [[204]],
        post,
    )
    rec.execute_kw(
        "error-message-post-bad-type",
        "sale.order message_post with message_type 'whatsapp' (not a value of the selection)",
        "sale.order",
        "message_post",
        [[2]],
        {"body": BODY, "message_type": "whatsapp", "subtype_xmlid": "mail.mt_note"},
    )
    rec.execute_kw(
        "error-attachment-bad-base64",
        "ir.attachment create with datas 'not base64!' (Python's non-strict b64decode drops "
        "the space and '!', 9 data characters are left)",
        "ir.attachment",
        "create",
        [{"name": "bad.pdf", "datas": "not base64!", "res_model": "sale.order", "res_id": 2,
          "mimetype": "application/pdf"}],
    )
    rec.execute_kw(
        "error-attachment-bad-padding",
        "ir.attachment create with datas 'AAA' (3 characters, no padding)",
        "ir.attachment",
        "create",
        [{"name": "bad2.pdf", "datas": "AAA", "res_model": "sale.order", "res_id": 2,
          "mimetype": "application/pdf"}],
    )

    # e. Partners: a company and its contact sharing one phone, an archived partner.
    def created(name, description, values):
        pid = result(rec.execute_kw(name, description, "res.partner", "create", [values]))
        p = rec.pg_write_dates("res_partner", [pid])
        if p:
            rec.amend(rec.next_id - 1, f"PostgreSQL keeps write_date {p[0]}")
        return pid

    company = created(
        "partner-create-company",
        "res.partner create of a company with a phone: the new id",
        {"name": "Walua Test SARL", "is_company": True, "phone": "+221 33 800 00 01"},
    )
    contact = created(
        "partner-create-contact",
        f"res.partner create of a contact of that company (parent_id {company}) with the same "
        "phone and a mobile",
        {"name": "Awa Diop", "parent_id": company, "phone": "+221 33 800 00 01",
         "mobile": "+221 77 555 00 42"},
    )
    archived = created(
        "partner-create-to-archive",
        "res.partner create of a person with a mobile only",
        {"name": "Client Archivé", "mobile": "+221 70 000 00 99"},
    )
    rec.execute_kw(
        "partner-archive",
        f"res.partner write active False on {archived}: True",
        "res.partner",
        "write",
        [[archived], {"active": False}],
    )
    p = rec.pg_write_dates("res_partner", [archived])
    if p:
        rec.amend(rec.next_id - 1, f"PostgreSQL keeps write_date {p[0]}")
    rec.execute_kw(
        "partner-creation-messages",
        "mail.message search_read of the messages on the three new partners: each create "
        "logged one ('Contact created', a notification with subtype Note)",
        "mail.message",
        "search_read",
        [[["model", "=", "res.partner"], ["res_id", "in", [company, contact, archived]]]],
        {"fields": MSG_FIELDS},
    )
    rec.execute_kw(
        "partner-search-write-date",
        f"res.partner search_read write_date > '{start}' (the start of this recording), order "
        "'write_date, id', limit 200: the company and its contact; the archived partner is left "
        "out (the domain does not name active). The message posted on Deco Addict did not "
        "change its write_date",
        "res.partner",
        "search_read",
        [[["write_date", ">", start]]],
        {"fields": PARTNER_FIELDS, "order": "write_date, id", "limit": 200},
    )
    rec.execute_kw(
        "partner-search-write-date-with-archived",
        "the same with ['active', 'in', [True, False]] first: the archived partner too",
        "res.partner",
        "search_read",
        [[["active", "in", [True, False]], ["write_date", ">", start]]],
        {"fields": PARTNER_FIELDS, "order": "write_date, id", "limit": 200},
    )
    rec.execute_kw(
        "partner-search-shared-phone",
        "search_read phone_mobile_search = '+221338000001' (the shared phone without spaces): "
        "the company and its contact, in res.partner's order (complete_name, id desc)",
        "res.partner",
        "search_read",
        [[["phone_mobile_search", "=", "+221338000001"]]],
        {"fields": ["id", "name", "parent_id", "commercial_partner_id"]},
    )
    rec.execute_kw(
        "partner-search-archived-mobile",
        "search_read phone_mobile_search = '+221700000099' (the archived partner's mobile): "
        "nothing, archived partners are left out",
        "res.partner",
        "search_read",
        [[["phone_mobile_search", "=", "+221700000099"]]],
        {"fields": ["id", "name"]},
    )
    rec.execute_kw(
        "partner-search-archived-mobile-active-any",
        "the same with ['active', 'in', [True, False]]: the archived partner",
        "res.partner",
        "search_read",
        [[["active", "in", [True, False]], ["phone_mobile_search", "=", "+221700000099"]]],
        {"fields": ["id", "name", "active", "phone_sanitized"]},
    )
    rec.execute_kw(
        "partner-search-phone-sanitized-contact",
        "search_read phone_sanitized = '+221 77 555 00 42': the contact (mobile first, as given)",
        "res.partner",
        "search_read",
        [[["phone_sanitized", "=", "+221 77 555 00 42"]]],
        {"fields": ["id", "name", "phone_sanitized"]},
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
    ch = sub.add_parser("chatter", help="record tests/fixtures/odoo16/chatter (on a fresh database)")
    ch.add_argument("--out", required=True)
    one = sub.add_parser("call", help="one execute_kw call, printed, not saved")
    one.add_argument("model")
    one.add_argument("method")
    one.add_argument("args", help="JSON list")
    one.add_argument("kwargs", nargs="?", help="JSON object")
    a = p.parse_args()
    with open(a.key_file, encoding="utf-8") as f:
        key = f.read().strip()
    if a.cmd in ("session2", "chatter"):
        if os.path.isdir(a.out) and os.listdir(a.out):
            raise SystemExit(f"{a.out} is not empty: record into an empty folder")
        scenario = session2 if a.cmd == "session2" else chatter
        scenario(Recorder(a.url, a.db, key, out=a.out, pg_db=a.pg_db))
    else:
        rec = Recorder(a.url, a.db, key)
        kwargs = json.loads(a.kwargs) if a.kwargs else None
        answer = rec.execute_kw("call", "", a.model, a.method, json.loads(a.args), kwargs)
        print(json.dumps(answer, indent=2))


if __name__ == "__main__":
    main()
