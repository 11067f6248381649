-- Daily reminders for unpaid invoices overdue by [vars] unpaid_invoice_days, at most once per
-- invoice per period of unpaid_invoice_days. Switch: [vars] auto_send_unpaid_invoices.
-- Reminders are business-initiated: they go as the approved template
-- [vars] unpaid_invoice_template (free text would fail outside the 24 h window).
local b = require "boutique"

return {
  schedule = "0 0 9 * * *",
  run = function()
    if not env.vars.auto_send_unpaid_invoices then return end
    local days = tonumber(env.vars.unpaid_invoice_days) or 7
    local today = os.time()
    local limit = os.date("!%Y-%m-%d", today - days * 86400)
    local invoices = env.odoo.search_read("account.move", {
      { "move_type", "=", "out_invoice" },
      { "state", "=", "posted" },
      { "payment_state", "in", { "not_paid", "partial" } },
      { "invoice_date_due", "<=", limit },
    }, { "name", "partner_id", "amount_residual", "currency_id", "invoice_date_due" }, { order = "invoice_date_due, id" })
    for _, inv in ipairs(invoices) do
      local y, m, d = tostring(inv.invoice_date_due):match("(%d+)-(%d+)-(%d+)")
      local due = os.time({ year = tonumber(y), month = tonumber(m), day = tonumber(d), hour = 0 })
      local period = math.floor((today - due) / (days * 86400))
      local key = string.format("unpaid_reminder:%d:%d", inv.id, period)
      if not env.store.get(key) then
        local phone, _, lang = b.partner_phone(inv.partner_id)
        if phone then
          env.whatsapp.send_template(phone, env.vars.unpaid_invoice_template or "unpaid_invoice_reminder", "fr",
            { inv.name, b.money(inv.amount_residual, inv.currency_id, lang), tostring(inv.invoice_date_due) },
            { record = { model = "account.move", id = inv.id } })
          env.store.set(key, true)
          logger.info("unpaid invoice reminder", inv.name, "period", period)
        end
      end
    end
  end,
}
