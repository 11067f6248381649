---@meta
-- walua's Lua API, for the Lua language server (LuaLS / sumneko): completion, hover docs
-- and type checks in any editor. `scripts/.luarc.json` points LuaLS at this file.
--
-- This file is never run. tests/lua_types.rs keeps it in sync with what the runtime really
-- exposes: every `---@field` of the classes below must exist in the runtime, and the other
-- way round. (Fields that are nil for a given message, e.g. `message.button` on a text,
-- are simply absent from that run's table.)

-------------------------------------------------------------------------------------------
-- Outbound messages
-------------------------------------------------------------------------------------------

---A message to send, as taken by `env.whatsapp.send`, returned by templates, and posted
---to `POST /api/messages` (without `to`, which the call adds).
---@class WaluaOutMessage
---@field type "text"|"image"|"document"|"video"|"audio"|"template"|"buttons"|"list"|"cta_url"|"mark_read"|"typing"
---@field text? string                 text: the body (4096 characters at most)
---@field preview_url? boolean         text: show a link preview
---@field link? string                 media: a public https URL
---@field media? string                media: an uploaded media id
---@field caption? string              image, document, video: caption
---@field filename? string             document: the file name shown
---@field voice? boolean               audio: send as a voice note (an .ogg file with the OPUS codec, 16 MB at most)
---@field name? string                 template: approved template name
---@field lang? string                 template: language code (default "fr")
---@field components? table[]          template: Meta's components (header/body parameters, buttons)
---@field body? string                 buttons, list: the body text
---@field buttons? WaluaButton[]       buttons: 1 to 3 reply buttons
---@field button? string               list: the label of the button that opens the list
---@field sections? WaluaListSection[] list: sections of rows
---@field header? string|WaluaHeader   buttons, cta_url: a text or a media header; list: a text only
---@field footer? string               buttons, list, cta_url: footer text
---@field display_text? string         cta_url: the button label (20 characters at most)
---@field url? string                  cta_url: the URL the button opens
---@field message_id? string           mark_read, typing: the inbound wamid
---@field reply_to? string             reply to this wamid
---@field from? string                 the account to send from (its name or phone number id, see [[whatsapp.accounts]])

---@class WaluaButton
---@field id string    the id your button script matches (256 characters at most)
---@field title string the label (20 characters at most)

---A media header of a reply-buttons or CTA URL message, in Meta's shape: `type` names the
---field that holds the file, e.g. `{ type = "image", image = { link = "https://…/p.jpg" } }`.
---A CTA URL message's media header takes a `link` only. List messages allow only a text header.
---@class WaluaHeader
---@field type "image"|"video"|"document"|"text"
---@field image? WaluaHeaderFile
---@field video? WaluaHeaderFile
---@field document? WaluaHeaderFile
---@field text? string

---@class WaluaHeaderFile
---@field id? string       an uploaded media id (or `media`)
---@field link? string     a public https URL
---@field filename? string document only

---@class WaluaListSection
---@field title? string
---@field rows { id: string, title: string, description?: string }[]

---@class WaluaMediaSpec
---@field link? string    a public https URL
---@field media? string   an uploaded media id
---@field bytes? string   the file itself (e.g. a PDF from env.odoo.invoice_pdf), uploaded as media first
---@field caption? string
---@field filename? string document only
---@field voice? boolean   audio only: a voice note; `bytes` must be OGG/OPUS (checked before the upload), 16 MB at most
---@field from? string     the account to send (and upload) from
---@field record? WaluaRecord the Odoo record it is about: noted on its chatter, with the file when `bytes` are given

---The Odoo record a send is about (`opts.record`): with `[odoo] chatter` on (the default), the
---send, a later delivery failure with Meta's explanation, and the file sent are noted on the
---record's chatter as an internal note.
---@class WaluaRecord
---@field model string  e.g. "sale.order", "account.move", "res.partner"
---@field id integer

-------------------------------------------------------------------------------------------
-- env: the daemon's API
-------------------------------------------------------------------------------------------

---Sending. Each call validates the message against Meta's limits and queues it on the
---durable outbox (committed with the run: a failing run sends nothing); it returns the
---outbound message's id. Without `from`, a reply to an inbound message goes out from the number
---the customer wrote to; other sends from the number the contact last wrote to, else the first
---account.
---@class WaluaWhatsApp
---@field send_text fun(to: string, body: string, opts?: { reply_to?: string, preview_url?: boolean, from?: string, record?: WaluaRecord }): integer
---@field send_image fun(to: string, spec: WaluaMediaSpec): integer
---@field send_document fun(to: string, spec: WaluaMediaSpec): integer
---@field send_video fun(to: string, spec: WaluaMediaSpec): integer
---@field send_audio fun(to: string, spec: WaluaMediaSpec): integer
---@field send_template fun(to: string, name: string, lang?: string, params?: any[]|table<string, any>|table[], opts?: { from?: string, record?: WaluaRecord }): integer an approved template; `params` is a plain list (header, body, then button values in order: URL suffixes, quick-reply payloads), or a table keyed by parameter name (plus `header`, `buttons`), from which walua builds Meta's components after checking them against the template; a list of tables with `type` is Meta's components, passed through
---@field send_buttons fun(to: string, body: string, buttons: WaluaButton[], opts?: { header?: string|WaluaHeader, footer?: string, reply_to?: string, from?: string, record?: WaluaRecord }): integer
---@field send_list fun(to: string, body: string, button_label: string, sections: WaluaListSection[], opts?: { header?: string, footer?: string, reply_to?: string, from?: string, record?: WaluaRecord }): integer
---@field send fun(to: string, message: WaluaOutMessage): integer
---@field mark_read fun(wamid: string): integer
---@field typing fun(message: WaluaMessage|string): integer marks the inbound message (the run's `message` or a wamid) read and shows the typing indicator until the next message or 25 s
---@field window_open fun(to: string, from?: string): boolean whether the contact's 24 h customer-service window with account `from` (default: any number) is open (free-form messages allowed)
---@field upload fun(bytes: string, filename: string, from?: string, ttl_minutes?: integer): string uploads a file as media through account `from` (dry run: kept beside the store) and returns its media id; `ttl_minutes` (60 to 43200) keeps it longer at Meta for numbers with "No Storage"

---Persistent key/value storage for scripts (JSON values), committed with the run.
---@class WaluaStore
---@field get fun(key: string): any
---@field set fun(key: string, value: any)
---@field delete fun(key: string)

---@class WaluaScenario
---@field start fun(name: string, to: string, vars?: table) starts `scenarios/<name>.lua` for a contact and sends its first step

---What every env.odoo function raises when Odoo fails: a table, `tostring(err)` is the message.
---@class OdooError
---@field message string      "env.odoo.call(sale.order, action_confirm): cannot reach Odoo: …"
---@field transient boolean   true: Odoo unreachable, timing out, 5xx, refusing the credentials — worth another try (an uncaught one makes walua run the whole run again later); false: Odoo refused the call itself (UserError…)
---@field kind "unreachable"|"timeout"|"http"|"access_denied"|"session_expired"|"fault"|"not_pdf"|"protocol"|"needs_password"
---@field exception? string   Odoo's exception for a fault, e.g. "odoo.exceptions.UserError"

---Odoo over JSON-RPC (needs an `[odoo]` section in walua.toml). A failure raises an `OdooError`.
---@class WaluaOdoo
---@field call fun(model: string, method: string, args?: table, kwargs?: table): any
---@field search_read fun(model: string, domain?: table, fields?: string[], opts?: { limit?: integer, order?: string }): table[]
---@field read fun(model: string, ids: integer[], fields?: string[]): table[]
---@field write fun(model: string, ids: integer[], values: table): boolean
---@field create fun(model: string, values: table): integer
---@field report_pdf fun(report_name: string, id: integer): string PDF bytes
---@field invoice_pdf fun(invoice_id: integer): string PDF bytes
---@field log fun(model: string, id: integer, body: string, attachment?: { name: string, data: string, mimetype?: string }): boolean an internal note on the record's chatter (Odoo e-mails nobody), posted after the run commits, retried while Odoo is down; false (nothing done) when `[odoo] chatter = false`

---Phone numbers, with libphonenumber's rules.
---@class WaluaPhone
---@field normalize fun(text: string|false|nil, country?: string): string|nil, string|nil Meta's wa_id form ("221771234567") of a number in any usual format; one without country code is read in `country` (ISO code, e.g. an Odoo partner's "SN") or [whatsapp] default_country; nil and the reason when it is not a valid number

---What walua knows of a template.
---@class WaluaTemplateInfo
---@field name string
---@field language string
---@field status string APPROVED, PENDING, REJECTED, PAUSED, DISABLED… (LOCAL: only defined on disk)
---@field quality string GREEN, YELLOW, RED or UNKNOWN
---@field category string UTILITY or MARKETING
---@field source "meta"|"definition"
---@field header? string the header text
---@field text? string the body text, with its {{1}} / {{name}} placeholders
---@field footer? string
---@field buttons table[] Meta's buttons (type, text, url, phone_number)
---@field parameters string[] the body's parameter names ("1", "2"… or names)

---Templates: Meta's registry and the definitions in templates/.
---@class WaluaTemplates
---@field get fun(name: string, lang?: string, opts?: { from?: string }): WaluaTemplateInfo|nil the template `name` in `lang` (default "fr") for the default account (or `from`'s WABA), nil when walua knows nothing of it

---@class WaluaEnv
---@field whatsapp WaluaWhatsApp
---@field store WaluaStore
---@field scenario WaluaScenario
---@field notify fun(to: string, template_name: string, record: table, opts?: { record?: WaluaRecord }): integer renders `templates/<template_name>.lua` with `record` and sends it
---@field handover fun(reason: string) asks for a human agent: flags this run's conversation (with `reason`) in the console until an agent takes it over; committed with the run; message runs only (an error in hook and cron runs)
---@field vars table<string, any> the `[vars]` table of walua.toml, read-only
---@field odoo WaluaOdoo
---@field phone WaluaPhone
---@field templates WaluaTemplates

---The daemon's API.
---@type WaluaEnv
env = {}

-------------------------------------------------------------------------------------------
-- message, contact, button_id, logger
-------------------------------------------------------------------------------------------

---The inbound message a run is about.
---@class WaluaMessage
---@field id string          the wamid
---@field db_id integer      walua's message id (`walua messages`, /api/messages/{id})
---@field from? string       the sender's phone number (nil for username-only contacts)
---@field type string        text, image, document, audio, video, sticker, location, button, interactive, ...
---@field timestamp integer  unix seconds
---@field text? string       text body, media caption, or the clicked button's / list row's title
---@field button? { id: string, title: string } a reply button or template quick-reply click
---@field list? { id: string, title: string, description?: string } a list row choice
---@field media? { id: string, mime_type?: string, caption?: string, filename?: string }
---@field location? { latitude: number, longitude: number, name?: string, address?: string }
---@field context? { id?: string, from?: string, forwarded?: boolean } the message this one replies to
---@field phone_number_id? string the business number it was sent to (see [[whatsapp.accounts]])
---@field raw table          the message exactly as Meta sent it

---@type WaluaMessage
message = {}

---Who sent the message.
---@class WaluaContact
---@field id string           BSUID when Meta gave one, else the phone number
---@field wa_id? string       phone number (may be nil since Meta's usernames)
---@field user_id? string     business-scoped user id (BSUID)
---@field name? string        profile name
---@field username? string    WhatsApp username
---@field conversation? { message_count: integer, last_inbound_at: integer }
---@field window_open boolean whether the 24 h customer-service window is open (free-form sends allowed)
---@field partner_id? integer  the Odoo res.partner of the contact's phone number (`[odoo] partners`), nil when none
---@field partner_name? string that partner's name
---@field opted_out? { scope: "marketing"|"all", since_ms: integer, source: string } set when the contact asked to stop ("STOP", "STOP PROMOTIONS", Meta's preferences): sends they opted out of fail

---@type WaluaContact
contact = {}

---The id of the clicked button (interactive reply, list row or template quick reply), or nil.
---@type string?
button_id = nil

---Log lines go to the daemon's log with the script's name.
---@class WaluaLogger
---@field debug fun(...: any)
---@field info fun(...: any)
---@field warn fun(...: any)
---@field error fun(...: any)

---@type WaluaLogger
logger = {}

-------------------------------------------------------------------------------------------
-- What each kind of script returns
-------------------------------------------------------------------------------------------

---`scripts/buttons/<name>.lua`: runs when an inbound button id matches `match`.
---@class ButtonScript
---@field match string                 a Lua pattern; its captures are `run`'s arguments
---@field anyone? boolean              true: any contact may click it; by default only a contact walua sent the button to (others get a polite refusal)
---@field run fun(...: string)

---A reply button of a scenario step.
---@class ScenarioButton
---@field id string
---@field title string                 20 characters at most
---@field next? string                 the next step, or "scenario:<other>"; nil ends the scenario
---@field reply? string                a text sent when it is clicked
---@field run? fun(vars: table): string? may return the next step

---@class ScenarioStep
---@field body? string                 the step's message (required unless the step only has `run`)
---@field header? string
---@field footer? string
---@field buttons? ScenarioButton[]    1 to 3
---@field run? fun(message: WaluaMessage, vars: table): string? a step without buttons handles the contact's next message; may return the next step

---`scripts/scenarios/<name>.lua`: a multi-step conversation.
---@class ScenarioScript
---@field start string                 the first step's name
---@field expires? integer             seconds before an unfinished scenario is forgotten (default 86400)
---@field steps table<string, ScenarioStep>

---`scripts/templates/<name>.lua` returns a `TemplateScript`: record → message.
---@alias TemplateScript fun(record: table): WaluaOutMessage

---`scripts/hooks/<name>.lua`: an Odoo event.
---@class HookScript
---@field model string                 e.g. "sale.order"
---@field on "create"|"write"
---@field fields? string[]             fields read (and, for "write", whose change triggers)
---@field domain? table                an Odoo domain the record must match
---@field initial? table               "write": the watched values a new record starts with, e.g. { state = "draft" }; a record created after the hook started but first seen already changed gets them as `previous`
---@field run fun(record: table, previous?: table) previous: the watched values walua last saw (nil for a record it never saw and older than the hook)

---`scripts/cron/<name>.lua`: a scheduled job.
---@class CronScript
---@field schedule string              cron: "min hour day month weekday" (or with seconds first)
---@field timezone? string             IANA name, e.g. "Africa/Dakar" (default UTC)
---@field run fun()

---`scripts/on_message.lua`: every inbound message no button script or scenario handled.
---@class OnMessageScript
---@field run fun(message: WaluaMessage)
