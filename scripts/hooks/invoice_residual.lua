-- The amount still due on an invoice changed (a payment was registered) -> a notification.
-- An invoice posted and paid between two polls is first seen with its payment: `initial = {}`
-- makes previous an empty table for it, and the amount before is then the invoice's total.
local b = require "boutique"

return {
  model = "account.move",
  on = "write",
  domain = { { "move_type", "=", "out_invoice" }, { "state", "=", "posted" } },
  fields = { "amount_residual", "name", "partner_id", "amount_total", "currency_id" },
  initial = {},
  run = function(invoice, previous)
    if not previous then return end
    local before = previous.amount_residual or invoice.amount_total
    if before == invoice.amount_residual then return end
    local phone, _, lang = b.partner_phone(invoice.partner_id)
    if not phone then return end
    local residual = b.money(invoice.amount_residual, invoice.currency_id, lang)
    local text
    if invoice.amount_residual <= 0 then
      text = string.format("Facture %s soldée. Merci pour votre paiement !", invoice.name)
    else
      text = string.format("Paiement reçu pour la facture %s. Reste à payer : %s.", invoice.name, residual)
    end
    local about = { record = { model = "account.move", id = invoice.id } }
    if env.whatsapp.window_open(phone) then
      env.whatsapp.send_text(phone, text, about)
    elseif env.vars.invoice_residual_template then
      env.whatsapp.send_template(phone, env.vars.invoice_residual_template, "fr", { invoice.name, residual }, about)
    end
  end,
}
