-- Helpers shared by the default scripts (require "boutique").
--
-- A module is loaded afresh for every run: the caches below (currencies, languages,
-- partners) last one run, so each run reads what it needs from Odoo once and an edit made
-- in Odoo is seen by the next run.
local M = {}

--- The id of a many2one value ({id, "name"}) or nil (Odoo sends false when empty).
function M.id_of(many2one)
  if type(many2one) == "table" then return many2one[1] end
  if type(many2one) == "number" then return many2one end
  return nil
end

--- The display name of a many2one value.
function M.name_of(many2one)
  if type(many2one) == "table" then return many2one[2] end
  return nil
end

-------------------------------------------------------------------------------------------
-- Amounts, written as Odoo writes them (odoo/tools/misc.py format_amount): the amount
-- rounded by the currency (rounding, decimal_places), grouped with the language's
-- thousands_sep / decimal_point / grouping (res.lang.format), the symbol before or after
-- (res.currency.position) with a no-break space between.
--
--   27000 XOF, fr_FR  -> "27 000 CFA"      (both spaces U+00A0; Odoo 16's XOF symbol is "CFA")
--   1234.5 USD, en_US -> "$ 1,234.50"      (U+00A0 after "$")
--   1234.5 EUR, fr_FR -> "1 234,50 €"
--
-- (The real Odoo 16's own tax_totals say "$ 36,512.50" for a USD invoice and
-- "1,740.00 €" for a EUR order, for an en_US user.)
-- Odoo also puts a zero-width no-break space after a minus sign; walua leaves it out
-- ("-27 000 CFA"), it only confuses copy and paste on a phone.
-------------------------------------------------------------------------------------------

local NBSP = "\u{A0}"

--- fr_FR as Odoo 16 ships it (res.lang 28: thousands_sep U+00A0, decimal_point ",",
--- grouping "[3,0]"). The shop's customers are in francophone Africa: a partner without a
--- language, or with one Odoo does not know, gets these separators.
M.FRENCH = { code = "fr_FR", thousands_sep = NBSP, decimal_point = ",", grouping = "[3,0]" }

--- Odoo's `split` (res_lang.py): cuts the reversed digits in groups of `counts`; 0 repeats
--- the last size, -1 stops grouping.
local function split(s, counts)
  local res = {}
  local saved = #s
  for _, count in ipairs(counts) do
    if s == "" or count == -1 then break end
    if count == 0 then
      while s ~= "" do
        res[#res + 1] = s:sub(1, saved)
        s = s:sub(saved + 1)
      end
      break
    end
    res[#res + 1] = s:sub(1, count)
    s = s:sub(count + 1)
    saved = count
  end
  if s ~= "" then res[#res + 1] = s end
  return res
end

--- Digits grouped like Odoo's `intersperse(digits, grouping, thousands_sep)`.
local function group_digits(digits, lang)
  local counts = {}
  for n in tostring(lang.grouping or "[]"):gmatch("-?%d+") do counts[#counts + 1] = tonumber(n) end
  local groups = split(digits:reverse(), counts)
  local out = {}
  for i = #groups, 1, -1 do out[#out + 1] = groups[i]:reverse() end
  local sep = lang.thousands_sep
  if type(sep) ~= "string" then sep = "" end
  return table.concat(out, sep)
end

--- Odoo's float_round(value, precision_rounding=r), HALF-UP (half away from zero).
local function round_to(value, rounding)
  if not rounding or rounding <= 0 then return value end
  local n = math.abs(value) / rounding
  n = math.floor(n + 0.5 + n * 2 ^ -52)
  local r = n * rounding
  return value < 0 and -r or r
end

--- A number with the language's separators and `decimals` decimals: res.lang.format with
--- grouping. Plain spaces become no-break spaces, as in Odoo's format_amount.
function M.format_number(value, decimals, lang)
  lang = lang or M.FRENCH
  value = tonumber(value) or 0
  local s = string.format("%." .. math.max(0, math.floor(decimals or 0)) .. "f", value)
  local sign, int, frac = s:match("^(%-?)(%d+)%.?(%d*)$")
  if not int then return s end
  if tonumber(s) == 0 then sign = "" end -- no "-0"
  local out = sign .. group_digits(int, lang)
  if frac ~= "" then out = out .. (lang.decimal_point or ".") .. frac end
  return (out:gsub(" ", NBSP))
end

--- A quantity: up to 3 decimals, trailing zeros dropped ("2", "1,5" in French).
function M.format_qty(qty, lang)
  qty = tonumber(qty) or 0
  local decimals = 0
  for d = 0, 3 do
    decimals = d
    if math.abs(qty - round_to(qty, 10 ^ -d)) < 1e-9 then break end
  end
  return M.format_number(qty, decimals, lang)
end

local currencies, langs, partners = {}, {}, {}

--- A res.currency (name, symbol, position, decimal_places, rounding), read once per run;
--- nil when `currency` is empty (false) or does not exist.
function M.currency(currency)
  if type(currency) == "table" and currency.symbol ~= nil then return currency end
  local id = M.id_of(currency)
  if not id then return nil end
  if currencies[id] == nil then
    local rows = env.odoo.read("res.currency", { id }, { "name", "symbol", "position", "decimal_places", "rounding" })
    currencies[id] = rows[1] or false
  end
  return currencies[id] or nil
end

--- The separators of a language code (res.lang: thousands_sep, decimal_point, grouping),
--- read once per run, also when the language is not active. French (M.FRENCH) for a
--- partner without a language (false) or with a code Odoo does not know.
function M.lang(code)
  if type(code) == "table" then return code end
  if type(code) ~= "string" or code == "" then code = M.FRENCH.code end
  if langs[code] == nil then
    local rows = env.odoo.search_read("res.lang", { { "code", "=", code }, { "active", "in", { true, false } } },
      { "code", "thousands_sep", "decimal_point", "grouping" }, { limit = 1 })
    langs[code] = rows[1] or false
  end
  if langs[code] then return langs[code] end
  if code ~= M.FRENCH.code then return M.lang(M.FRENCH.code) end
  return M.FRENCH
end

--- An amount in a currency (a many2one value such as a record's currency_id, an id, or a
--- record from M.currency) for a partner language (a code such as "fr_FR", or false/nil
--- for French), as Odoo writes it. Without a currency: the number alone.
function M.money(amount, currency, lang)
  amount = tonumber(amount) or 0
  local l = M.lang(lang)
  local cur = M.currency(currency)
  if not cur then
    local integral = amount == math.floor(amount)
    return M.format_number(amount, integral and 0 or 2, l)
  end
  local decimals = tonumber(cur.decimal_places) or 2
  local number = M.format_number(round_to(amount, tonumber(cur.rounding)), decimals, l)
  local symbol = cur.symbol
  if type(symbol) ~= "string" or symbol == "" then symbol = cur.name or "" end
  if cur.position == "before" then
    return symbol .. NBSP .. number
  end
  return number .. NBSP .. symbol
end

-------------------------------------------------------------------------------------------
-- Partners and orders
-------------------------------------------------------------------------------------------

--- A res.partner (name, phone, mobile, lang), read once per run; nil when it is empty or
--- does not exist.
function M.partner(partner)
  local id = M.id_of(partner)
  if not id then return nil end
  if partners[id] == nil then
    local rows = env.odoo.read("res.partner", { id }, { "name", "phone", "mobile", "lang", "country_id" })
    partners[id] = rows[1] or false
  end
  return partners[id] or nil
end

--- A partner's language code, or nil (amounts are then written in French).
function M.partner_lang(partner)
  local p = M.partner(partner)
  if p and type(p.lang) == "string" and p.lang ~= "" then return p.lang end
  return nil
end

local countries = {}

--- The ISO code of a res.country (many2one), read once per run; nil when empty.
function M.country_code(country)
  local id = M.id_of(country)
  if not id then return nil end
  if countries[id] == nil then
    local rows = env.odoo.read("res.country", { id }, { "code" })
    countries[id] = (rows[1] and rows[1].code) or false
  end
  return countries[id] or nil
end

--- The WhatsApp number of an Odoo partner (mobile first, then phone) in Meta's form
--- ("221771234567"); then the partner's name and language code. nil when the partner has
--- no number, or none WhatsApp can take (e.g. a local number without country code and no
--- [whatsapp] default_country): logged, so that one bad number does not stop a hook or a
--- reminder run for the others.
function M.partner_phone(partner)
  local p = M.partner(partner)
  if not p then return nil end
  local raw = (p.mobile ~= false and p.mobile) or (p.phone ~= false and p.phone) or nil
  if not raw then return nil end
  local number
  if env.phone and env.phone.normalize then
    local why
    -- A number written without country code is read in the partner's country, else in
    -- [whatsapp] default_country.
    number, why = env.phone.normalize(tostring(raw), M.country_code(p.country_id))
    if not number then
      logger.warn("partner", p.id, p.name, "phone", tostring(raw), "not usable on WhatsApp:", why)
      return nil
    end
  else
    number = tostring(raw):gsub("[^%d]", "")
    if number == "" then return nil end
  end
  return number, p.name, M.partner_lang(partner)
end

--- A record's amount for its partner: `money(amount, record.currency_id, partner's lang)`.
function M.amount_of(record, amount)
  return M.money(amount, record.currency_id, M.partner_lang(record.partner_id))
end

--- A sale order, or nil when it was deleted. Any other Odoo failure is raised again: when
--- Odoo is down (err.transient), walua runs the whole button again later.
function M.order(order_id)
  local ok, rows = pcall(env.odoo.read, "sale.order", { tonumber(order_id) },
    { "name", "state", "partner_id", "amount_total", "currency_id", "order_line" })
  if not ok then
    if type(rows) == "table" and rows.exception == "odoo.exceptions.MissingError" then return nil end
    error(rows, 0)
  end
  return rows[1]
end

--- The order a button is about; when it no longer exists, tells the customer and returns nil.
function M.order_or_say(order_id)
  local order = M.order(order_id)
  if not order then
    env.whatsapp.send_text(message.from, "Commande introuvable.")
  end
  return order
end

--- A customer invoice, or nil when it does not exist (or is not a customer invoice).
function M.invoice(invoice_id)
  local ok, rows = pcall(env.odoo.read, "account.move", { tonumber(invoice_id) },
    { "name", "state", "move_type", "partner_id", "amount_total", "amount_residual", "currency_id",
      "invoice_date", "invoice_date_due", "payment_state" })
  if not ok then
    if type(rows) == "table" and rows.exception == "odoo.exceptions.MissingError" then return nil end
    error(rows, 0)
  end
  local inv = rows[1]
  if not inv or inv.move_type ~= "out_invoice" or inv.state ~= "posted" then return nil end
  return inv
end

--- The invoice a button is about; when there is none to show, tells the customer.
function M.invoice_or_say(invoice_id)
  local inv = M.invoice(invoice_id)
  if not inv then
    env.whatsapp.send_text(message.from, "Facture introuvable.")
  end
  return inv
end

--- The product lines of an order, in Odoo's order: section and note lines (display_type
--- "line_section" / "line_note", no product, no amount) are left out.
function M.order_lines(order)
  local lines = env.odoo.search_read("sale.order.line",
    { { "order_id", "=", M.id_of(order.id) or order.id }, { "display_type", "=", false } },
    { "name", "product_id", "product_uom_qty", "price_unit", "price_subtotal", "display_type" },
    { order = "sequence asc, id asc" })
  local out = {}
  for _, l in ipairs(lines) do
    if not l.display_type then out[#out + 1] = l end
  end
  return out
end

-------------------------------------------------------------------------------------------
-- What the buttons may do, by Odoo 16's own rules (sale/views/sale_order_views.xml and
-- sale_order.py): "Confirm" is offered on quotations (draft, sent) only and action_confirm
-- refuses done and cancelled orders; "Cancel" is offered on draft, sent and sale orders
-- only, never on a locked (done) one, although action_cancel itself would cancel it.
-------------------------------------------------------------------------------------------

local SHOP = "Pour toute question, merci de contacter directement la boutique."

--- Why an order cannot be confirmed from WhatsApp, or nil when it can.
function M.confirm_refusal(order)
  local s, n = order.state, order.name
  if s == "draft" or s == "sent" then return nil end
  if s == "sale" then return "La commande " .. n .. " est déjà validée. Merci !" end
  if s == "done" then
    return "La commande " .. n .. " est déjà validée et verrouillée (livrée ou clôturée) : il n'y a plus rien à valider. " .. SHOP
  end
  if s == "cancel" then
    return "La commande " .. n .. " a été annulée : elle ne peut plus être validée. " ..
      "Pour commander à nouveau, merci de contacter la boutique."
  end
  return "La commande " .. n .. " ne peut pas être validée dans son état actuel. " .. SHOP
end

--- Why an order cannot be cancelled from WhatsApp, or nil when it can.
function M.cancel_refusal(order)
  local s, n = order.state, order.name
  if s == "draft" or s == "sent" or s == "sale" then return nil end
  if s == "cancel" then return "La commande " .. n .. " est déjà annulée." end
  if s == "done" then
    return "Désolé, la commande " .. n .. " ne peut plus être annulée : elle est verrouillée " ..
      "(déjà livrée ou clôturée). " .. SHOP
  end
  return "Désolé, la commande " .. n .. " ne peut pas être annulée dans son état actuel. " .. SHOP
end

--- The reply when Odoo refused an action the checks above allowed (`what`: "validée",
--- "annulée").
function M.refused_by_odoo(order, what)
  return "Désolé, la commande " .. order.name .. " ne peut pas être " .. what .. " pour le moment. " .. SHOP
end

--- Calls an order action; a refusal by Odoo (a UserError…, e.g. the order changed in Odoo
--- since it was read) returns false and the error, anything transient is raised again so
--- that walua runs the button again later.
function M.try_call(model, method, args, kwargs)
  local ok, res = pcall(env.odoo.call, model, method, args, kwargs)
  if ok then return true, res end
  if type(res) ~= "table" or res.transient then error(res, 0) end
  return false, res
end

M.states = {
  draft = "Devis",
  sent = "Devis envoyé",
  sale = "Confirmée",
  done = "Verrouillée",
  cancel = "Annulée",
}

--- The payment method a customer chose for an order (scenario payment_method): kept in
--- env.store and noted on the order's chatter in Odoo.
--- A payment link per method, from [vars] (`payment_link_wave`, `payment_link_orange_money`):
--- sent to the customer after their choice and written in the chatter note.
local LINK_VARS = { ["Wave"] = "payment_link_wave", ["Orange Money"] = "payment_link_orange_money" }

function M.payment_chosen(vars, method)
  env.store.set("payment_method:" .. tostring(vars.order_id), method)
  local link = env.vars[LINK_VARS[method] or ""]
  if link and vars.order_id then
    link = tostring(link):gsub("{order}", tostring(vars.order_name or vars.order_id))
  end
  if vars.order_id then
    local note = "Moyen de paiement choisi par le client sur WhatsApp : " .. method .. "."
    if link then note = note .. "\nLien de paiement envoyé : " .. link end
    env.odoo.log("sale.order", tonumber(vars.order_id), note)
  end
  if link and message and message.from then
    env.whatsapp.send_text(message.from, "Pour payer par " .. method .. " : " .. link)
  end
end

return M
