-- The seed module's two-step scenario: validation, then payment method (Wave / Orange Money).
-- Start it with env.scenario.start("order_validation", phone, { order_id = 42 }).
return {
  start = "ask",
  steps = {
    ask = {
      body = "Votre commande est prête. Valider ?",
      buttons = {
        { id = "yes", title = "Valider", next = "scenario:payment_method",
          run = function(vars)
            if vars.order_id then
              env.odoo.call("sale.order", "action_confirm", { { vars.order_id } })
            end
            env.whatsapp.send_text(message.from, "Commande validée !")
          end },
        { id = "no", title = "Annuler", reply = "Commande annulée.",
          run = function(vars)
            if vars.order_id then
              env.odoo.call("sale.order", "action_cancel", { { vars.order_id } }, { context = { disable_cancel_warning = true } })
            end
          end },
      },
    },
  },
}
