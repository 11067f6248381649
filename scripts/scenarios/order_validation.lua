-- The seed module's two-step scenario: validation, then payment method (Wave / Orange Money).
-- Start it with env.scenario.start("order_validation", phone, { order_id = 42 }).
-- The order is checked first, by the same rules as the Valider / Annuler buttons: a
-- cancelled or locked order is not confirmed, a locked one is not cancelled; the customer
-- is told why and the scenario ends there.
local b = require "boutique"

--- The order of the scenario, or nil after telling the customer it no longer exists.
local function order_of(vars)
  local order = b.order(vars.order_id)
  if not order then env.whatsapp.send_text(message.from, "Commande introuvable.") end
  return order
end

return {
  start = "ask",
  steps = {
    ask = {
      body = "Votre commande est prête. Valider ?",
      buttons = {
        { id = "yes", title = "Valider",
          run = function(vars)
            if vars.order_id then
              local order = order_of(vars)
              if not order then return nil end
              local refusal = b.confirm_refusal(order)
              if refusal then
                env.whatsapp.send_text(message.from, refusal)
                return nil
              end
              if not b.try_call("sale.order", "action_confirm", { { order.id } }) then
                env.whatsapp.send_text(message.from, b.refused_by_odoo(order, "validée"))
                return nil
              end
            end
            env.whatsapp.send_text(message.from, "Commande validée !")
            return "scenario:payment_method"
          end },
        { id = "no", title = "Annuler",
          run = function(vars)
            if vars.order_id then
              local order = order_of(vars)
              if not order then return nil end
              local refusal = b.cancel_refusal(order)
              if refusal then
                env.whatsapp.send_text(message.from, refusal)
                return nil
              end
              if not b.try_call("sale.order", "action_cancel", { { order.id } }, { context = { disable_cancel_warning = true } }) then
                env.whatsapp.send_text(message.from, b.refused_by_odoo(order, "annulée"))
                return nil
              end
            end
            env.whatsapp.send_text(message.from, "Commande annulée.")
            return nil
          end },
      },
    },
  },
}
