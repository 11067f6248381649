-- "Détail de la facture": number, dates, amounts and what is left to pay, as text, in the
-- invoice's currency. Offer it with a button `btn_invoice_details_<id>`.
local b = require "boutique"

local PAYMENT = {
  not_paid = "non payée", in_payment = "en cours de paiement", paid = "payée",
  partial = "partiellement payée", reversed = "extournée",
}

return {
  match = "^btn_invoice_details_(%d+)$",
  run = function(invoice_id)
    local invoice = b.invoice_or_say(invoice_id)
    if not invoice then return end
    local lang = b.partner_lang(invoice.partner_id)
    local money = function(v) return b.money(v, invoice.currency_id, lang) end
    local text = { "Facture " .. invoice.name .. " :" }
    if invoice.invoice_date then text[#text + 1] = "Date : " .. tostring(invoice.invoice_date) end
    if invoice.invoice_date_due then text[#text + 1] = "Échéance : " .. tostring(invoice.invoice_date_due) end
    text[#text + 1] = "Montant : " .. money(invoice.amount_total)
    text[#text + 1] = "Reste à payer : " .. money(invoice.amount_residual)
    text[#text + 1] = "État : " .. (PAYMENT[invoice.payment_state] or tostring(invoice.payment_state))
    env.whatsapp.send_text(message.from, table.concat(text, "\n"))
  end,
}
