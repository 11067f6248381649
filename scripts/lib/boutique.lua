-- Helpers shared by the default scripts (require "boutique").
local M = {}

--- "15000" -> "15 000 F CFA"
function M.fcfa(amount)
  local n = math.floor((tonumber(amount) or 0) + 0.5)
  local s = tostring(math.abs(n))
  local out = s:reverse():gsub("(%d%d%d)", "%1 "):reverse():gsub("^ ", "")
  if n < 0 then out = "-" .. out end
  return out .. " F CFA"
end

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

--- The WhatsApp number of an Odoo partner (mobile first, then phone), digits only.
function M.partner_phone(partner)
  local id = M.id_of(partner)
  if not id then return nil end
  local rows = env.odoo.read("res.partner", { id }, { "name", "phone", "mobile" })
  local p = rows[1]
  if not p then return nil end
  local raw = (p.mobile ~= false and p.mobile) or (p.phone ~= false and p.phone) or nil
  if not raw then return nil end
  local digits = tostring(raw):gsub("[^%d]", "")
  if digits == "" then return nil end
  return digits, p.name
end

--- A sale order, or nil when it was deleted. Any other Odoo failure is raised again: when
--- Odoo is down (err.transient), walua runs the whole button again later.
function M.order(order_id)
  local ok, rows = pcall(env.odoo.read, "sale.order", { tonumber(order_id) },
    { "name", "state", "partner_id", "amount_total", "order_line" })
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

--- Meta components of a template whose body takes `params` and whose quick-reply buttons
--- carry `payloads` (the same ids as the interactive buttons, so button scripts match both).
function M.template_components(params, payloads)
  local body = {}
  for _, p in ipairs(params) do body[#body + 1] = { type = "text", text = tostring(p) } end
  local components = { { type = "body", parameters = body } }
  for i, payload in ipairs(payloads or {}) do
    components[#components + 1] = {
      type = "button", sub_type = "quick_reply", index = tostring(i - 1),
      parameters = { { type = "payload", payload = payload } },
    }
  end
  return components
end

M.states = {
  draft = "Devis",
  sent = "Devis envoyé",
  sale = "Confirmée",
  done = "Verrouillée",
  cancel = "Annulée",
}

return M
