-- The interactive message sent when an order is created (24 h window open). The hook
-- gives the amount ready written (`amount_text`: currency and language come from Odoo,
-- which a template cannot read).

return function(order)
  return {
    type = "buttons",
    body = string.format("Bonjour %s,\n\nVotre commande %s a été créée.\n\nMontant : %s",
      order.partner_name or "", order.name, order.amount_text or tostring(order.amount_total)),
    buttons = {
      { id = "btn_validate_order_" .. order.id, title = "Valider" },
      { id = "btn_cancel_order_" .. order.id, title = "Annuler" },
      { id = "btn_order_details_" .. order.id, title = "Voir détail" },
    },
  }
end
