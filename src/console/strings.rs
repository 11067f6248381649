//! Every word the console shows, in one place: French today. Another language is another
//! `Strings` value (and a way to choose it); no text is written in the pages themselves.

/// The console's texts.
pub struct Strings {
    /// The product name in titles.
    pub app: &'static str,
    /// Sign-in page.
    pub sign_in_title: &'static str,
    /// Label of the user name field.
    pub user: &'static str,
    /// Label of the password field.
    pub password: &'static str,
    /// The sign-in button.
    pub sign_in: &'static str,
    /// After a refused sign-in (the same whatever was wrong).
    pub sign_in_refused: &'static str,
    /// The sign-out button.
    pub sign_out: &'static str,
    /// The inbox title.
    pub inbox: &'static str,
    /// Filter: every conversation.
    pub filter_all: &'static str,
    /// Filter: unread.
    pub filter_unread: &'static str,
    /// Filter: the 24 h window is open.
    pub filter_open: &'static str,
    /// Filter: a send failed.
    pub filter_failed: &'static str,
    /// Filter: handed over to a person.
    pub filter_handover: &'static str,
    /// No conversation matches.
    pub no_conversation: &'static str,
    /// Badge: unread messages.
    pub unread: &'static str,
    /// The window is open, with the time left.
    pub window_open: &'static str,
    /// The window is closed.
    pub window_closed: &'static str,
    /// Badge: a send failed.
    pub failed_send: &'static str,
    /// Badge: an active scenario.
    pub scenario: &'static str,
    /// Badge: taken over by an agent.
    pub taken_by: &'static str,
    /// Badge: a script asked for a person.
    pub help_requested: &'static str,
    /// Back to the inbox.
    pub back: &'static str,
    /// The reply box's placeholder.
    pub reply_placeholder: &'static str,
    /// The send button.
    pub send: &'static str,
    /// Why the reply box is closed, and what to do.
    pub window_closed_help: &'static str,
    /// Why a viewer has no reply box.
    pub read_only: &'static str,
    /// "Take over" button.
    pub take_over: &'static str,
    /// "Give back to the bot" button.
    pub give_back: &'static str,
    /// The bot is paused for this contact until …
    pub handover_until: &'static str,
    /// Statuses, as ticks' titles.
    pub status_queued: &'static str,
    /// Sent.
    pub status_sent: &'static str,
    /// Delivered.
    pub status_delivered: &'static str,
    /// Read.
    pub status_read: &'static str,
    /// Failed.
    pub status_failed: &'static str,
    /// Recorded only (dry run).
    pub status_dry_run: &'static str,
    /// Unknown outcome (walua died while Meta answered).
    pub status_unknown: &'static str,
    /// Script outcome: which scripts ran.
    pub scripts_ran: &'static str,
    /// Script outcome: nothing matched.
    pub no_script: &'static str,
    /// Script outcome: the error.
    pub script_error: &'static str,
    /// A template message.
    pub template: &'static str,
    /// A document link.
    pub document: &'static str,
    /// A location.
    pub location: &'static str,
    /// Media not downloaded (yet).
    pub media_missing: &'static str,
    /// The browser notification when a script asks for a person.
    pub notify_help: &'static str,
    /// Not allowed (role).
    pub forbidden: &'static str,
    /// A reply could not be queued.
    pub reply_failed: &'static str,
    /// The live connection dropped.
    pub offline: &'static str,
    /// Hours / minutes abbreviations for the window's time left.
    pub hours: &'static str,
    /// Minutes.
    pub minutes: &'static str,
    /// Link to the operations pages.
    pub operations: &'static str,
    /// A send on its way to Meta.
    pub status_sending: &'static str,
    /// A send cancelled before it left.
    pub status_cancelled: &'static str,
    /// A send held while Meta pauses its template.
    pub status_held: &'static str,
    /// Button: queue a failed or cancelled send again.
    pub resend: &'static str,
    /// Button: cancel a queued send.
    pub cancel_send: &'static str,
    /// A form named a message that is not this conversation's.
    pub no_such_message: &'static str,
    /// Label of the file field.
    pub attach_label: &'static str,
    /// Placeholder of an attachment's caption.
    pub caption_placeholder: &'static str,
    /// Button: send the file.
    pub attach_send: &'static str,
    /// The attachment form came without a file.
    pub attach_missing: &'static str,
    /// Prefix of a refused file name.
    pub attach_name: &'static str,
    /// The template form came without a template.
    pub template_missing: &'static str,
    /// Title of the template picker.
    pub picker_title: &'static str,
    /// No template can be sent from this number.
    pub picker_none: &'static str,
    /// Button: show the chosen template's form.
    pub picker_choose: &'static str,
    /// Label: the header's file.
    pub picker_header_file: &'static str,
    /// Label: the header's file by link.
    pub picker_header_link: &'static str,
    /// Label: a header parameter.
    pub picker_header_param: &'static str,
    /// Label: a URL button's suffix.
    pub picker_url_suffix: &'static str,
    /// Button: send the template.
    pub picker_send: &'static str,
    /// Operations: the outbox page.
    pub ops_outbox: &'static str,
    /// Operations: the scripts page.
    pub ops_scripts: &'static str,
    /// Operations: the parked runs page.
    pub ops_parked: &'static str,
    /// Operations: the health page.
    pub ops_health: &'static str,
    /// Operations: the campaigns page.
    pub ops_campaigns: &'static str,
    /// Campaigns: none yet.
    pub campaigns_none: &'static str,
    /// Column: a name.
    pub col_name: &'static str,
    /// Column: a template.
    pub col_template: &'static str,
    /// Column: progress.
    pub col_progress: &'static str,
    /// Report: recipients.
    pub campaign_total: &'static str,
    /// Report: not handed to the outbox yet.
    pub campaign_pending: &'static str,
    /// Report: queued.
    pub campaign_queued: &'static str,
    /// Report: accepted by Meta.
    pub campaign_sent: &'static str,
    /// Report: delivered.
    pub campaign_delivered: &'static str,
    /// Report: read.
    pub campaign_read: &'static str,
    /// Report: failed.
    pub campaign_failed: &'static str,
    /// Report: skipped.
    pub campaign_skipped: &'static str,
    /// Report: replied.
    pub campaign_replied: &'static str,
    /// Report: opted out.
    pub campaign_opted_out: &'static str,
    /// Report: cancelled.
    pub campaign_cancelled: &'static str,
    /// Report: failures by Meta code.
    pub campaign_failed_by_code: &'static str,
    /// Report: skipped, by reason.
    pub campaign_skipped_by_reason: &'static str,
    /// Report: the skipped recipients.
    pub campaign_skipped_list: &'static str,
    /// Report: time left.
    pub campaign_eta: &'static str,
    /// Action: start.
    pub campaign_start: &'static str,
    pub campaign_new_title: &'static str,
    pub campaign_new_name: &'static str,
    pub campaign_new_template: &'static str,
    pub campaign_new_csv: &'static str,
    pub campaign_new_at: &'static str,
    pub campaign_new_submit: &'static str,
    pub campaign_new_no_templates: &'static str,
    pub campaign_created: &'static str,
    pub campaign_csv_missing: &'static str,
    pub campaign_csv_not_utf8: &'static str,
    /// Action: pause.
    pub campaign_pause: &'static str,
    /// Action: resume.
    pub campaign_resume: &'static str,
    /// Action: cancel.
    pub campaign_cancel: &'static str,
    /// After an action.
    pub campaign_done_action: &'static str,
    /// Status: draft.
    pub campaign_status_draft: &'static str,
    /// Status: scheduled.
    pub campaign_status_scheduled: &'static str,
    /// Status: running.
    pub campaign_status_running: &'static str,
    /// Status: paused.
    pub campaign_status_paused: &'static str,
    /// Status: held by Meta's pause of the template.
    pub campaign_status_held: &'static str,
    /// Status: cancelled.
    pub campaign_status_cancelled: &'static str,
    /// Status: done.
    pub campaign_status_done: &'static str,
    /// A scheduled campaign's time.
    pub campaign_starts_at: &'static str,
    /// Skipped: an invalid number.
    pub skip_invalid: &'static str,
    /// Skipped: given twice.
    pub skip_duplicate: &'static str,
    /// Skipped: opted out.
    pub skip_opted_out: &'static str,
    /// Skipped: refused (parameters, template).
    pub skip_refused: &'static str,
    /// Operations, for a role that may not act.
    pub ops_read_only: &'static str,
    /// Outbox: the jobs.
    pub outbox_queue: &'static str,
    /// Outbox: no job.
    pub outbox_empty: &'static str,
    /// Outbox: sends in trouble.
    pub outbox_troubles: &'static str,
    /// Outbox: nothing in trouble.
    pub outbox_no_trouble: &'static str,
    /// Link to the next, older page.
    pub older: &'static str,
    /// Column: recipient.
    pub col_to: &'static str,
    /// Column: sender.
    pub col_from: &'static str,
    /// Column: kind.
    pub col_kind: &'static str,
    /// Column: the message.
    pub col_message: &'static str,
    /// The picker's first, empty choice.
    pub picker_placeholder: &'static str,
    /// Other Odoo partners share the contact's number.
    pub partner_ambiguous: &'static str,
    /// The contact opted out of everything the business starts.
    pub opted_out_all: &'static str,
    /// The contact opted out of marketing.
    pub opted_out_marketing: &'static str,
    /// The store or the journal can write.
    pub writable: &'static str,
    /// Health: template sync, title when no WABA is configured.
    pub health_templates_none_title: &'static str,
    /// Health: no WABA configured.
    pub health_templates_none: &'static str,
    /// Column: state.
    pub col_state: &'static str,
    /// Column: attempts.
    pub col_attempts: &'static str,
    /// Column: reason.
    pub col_reason: &'static str,
    /// Column: script.
    pub col_script: &'static str,
    /// Column: version.
    pub col_version: &'static str,
    /// Column: loaded at.
    pub col_loaded: &'static str,
    /// Column: error.
    pub col_error: &'static str,
    /// Column: run.
    pub col_run: &'static str,
    /// Column: when.
    pub col_when: &'static str,
    /// After a resend.
    pub resent: &'static str,
    /// After a cancel.
    pub cancelled: &'static str,
    /// Button: reload every script.
    pub reload: &'static str,
    /// After a reload.
    pub reloaded: &'static str,
    /// Counted after a reload.
    pub scripts_loaded: &'static str,
    /// A date that never was.
    pub never: &'static str,
    /// Scripts: quarantined messages.
    pub quarantined: &'static str,
    /// Scripts: no quarantined message.
    pub quarantined_none: &'static str,
    /// Button: run a quarantined message's scripts again.
    pub run_again: &'static str,
    /// After a quarantined message is put back.
    pub dispatched: &'static str,
    /// Parked runs: what they are.
    pub parked_help: &'static str,
    /// Parked runs: none.
    pub parked_none: &'static str,
    /// A parked run.
    pub parked_state: &'static str,
    /// A run being retried.
    pub retrying_state: &'static str,
    /// A parked message too old to replay.
    pub parked_expired: &'static str,
    /// Button: replay a parked run.
    pub replay: &'static str,
    /// After a replay.
    pub replayed: &'static str,
    /// An operations form walua does not know.
    pub unknown_action: &'static str,
    /// Health: ok.
    pub health_ok: &'static str,
    /// Health: degraded.
    pub health_degraded: &'static str,
    /// Health: failing.
    pub health_failing: &'static str,
    /// Health: the store.
    pub health_store: &'static str,
    /// Health: the journal.
    pub health_journal: &'static str,
    /// Health: journal backlog.
    pub health_backlog: &'static str,
    /// Health: outbox depth.
    pub health_outbox: &'static str,
    /// Health: scripts loaded / failing.
    pub health_scripts: &'static str,
    /// Health: Odoo.
    pub health_odoo: &'static str,
    /// Odoo answers.
    pub odoo_reachable: &'static str,
    /// Odoo does not answer.
    pub odoo_unreachable: &'static str,
    /// No Odoo configured.
    pub odoo_not_configured: &'static str,
    /// Health: age of the template sync of a WABA.
    pub health_templates: &'static str,
    /// After a duration: in the past.
    pub ago: &'static str,

    // Search and pages (issue 20, points 4 and 5).
    /// The link to the inbox's next (older) page.
    pub older_conversations: &'static str,
    /// The link to a thread's older messages.
    pub older_messages: &'static str,
    /// The link back to a thread's latest messages.
    pub newer_messages: &'static str,
    /// The search box's placeholder and label.
    pub search_placeholder: &'static str,
    /// The search button.
    pub search_button: &'static str,
    /// Search results: the contacts found.
    pub search_contacts: &'static str,
    /// Search results: the messages found.
    pub search_messages: &'static str,
    /// Nothing found.
    pub search_none: &'static str,
    /// The statistics page's texts (see [`StatsStrings`]).
    pub stats: StatsStrings,
}

/// French, the console's language.
pub const FR: Strings = Strings {
    app: "walua",
    sign_in_title: "Connexion",
    user: "Identifiant",
    password: "Mot de passe",
    sign_in: "Se connecter",
    sign_in_refused: "Identifiant ou mot de passe incorrect.",
    sign_out: "Se déconnecter",
    inbox: "Conversations",
    filter_all: "Toutes",
    filter_unread: "Non lues",
    filter_open: "Fenêtre ouverte",
    filter_failed: "Envois en échec",
    filter_handover: "Prises en main",
    no_conversation: "Aucune conversation.",
    unread: "non lu(s)",
    window_open: "Fenêtre 24 h ouverte",
    window_closed: "Fenêtre 24 h fermée",
    failed_send: "Envoi en échec",
    scenario: "Scénario",
    taken_by: "Pris en main par",
    help_requested: "Demande un humain",
    back: "← Conversations",
    reply_placeholder: "Votre réponse…",
    send: "Envoyer",
    window_closed_help: "Le client n'a pas écrit depuis plus de 24 heures : WhatsApp n'accepte plus de message libre. Envoyez un modèle approuvé ci-dessous, ou attendez qu'il vous écrive.",
    read_only: "Lecture seule : votre rôle ne permet pas de répondre.",
    take_over: "Prendre la main",
    give_back: "Rendre au bot",
    handover_until: "Le bot est en pause pour ce client jusqu'à",
    status_queued: "En attente",
    status_sent: "Envoyé",
    status_delivered: "Distribué",
    status_read: "Lu",
    status_failed: "Échec",
    status_dry_run: "Simulation (rien n'est envoyé)",
    status_unknown: "Issue inconnue",
    scripts_ran: "Scripts",
    no_script: "aucun script",
    script_error: "Erreur",
    template: "Modèle",
    document: "Document",
    location: "Position",
    media_missing: "fichier pas encore téléchargé",
    notify_help: "Un client demande à parler à quelqu'un",
    forbidden: "Votre rôle ne permet pas cette action.",
    reply_failed: "Message refusé",
    offline: "Connexion perdue, reconnexion…",
    hours: "h",
    minutes: "min",
    operations: "Exploitation",
    status_sending: "Envoi en cours",
    status_cancelled: "Annulé",
    status_held: "Retenu (modèle en pause chez Meta)",
    resend: "Renvoyer",
    cancel_send: "Annuler l'envoi",
    no_such_message: "Message introuvable dans cette conversation.",
    attach_label: "Fichier",
    caption_placeholder: "Légende (facultative)",
    attach_send: "Envoyer le fichier",
    attach_missing: "Choisissez un fichier.",
    attach_name: "Nom de fichier refusé :",
    template_missing: "Choisissez un modèle.",
    picker_title: "Envoyer un modèle approuvé",
    picker_none: "Aucun modèle approuvé pour ce numéro : définissez-en un dans templates/ puis walua templates push.",
    picker_choose: "Choisir",
    picker_header_file: "Fichier d'en-tête",
    picker_header_link: "ou lien du fichier",
    picker_header_param: "En-tête",
    picker_url_suffix: "Fin du lien du bouton",
    picker_send: "Envoyer le modèle",
    ops_outbox: "File d'envoi",
    ops_scripts: "Scripts",
    ops_parked: "Exécutions en échec",
    ops_health: "Santé",
    ops_campaigns: "Campagnes",
    campaigns_none: "Aucune campagne pour l'instant. Un administrateur en crée une ci-dessous (fichier CSV), avec walua campaign create ou POST /api/campaigns.",
    col_name: "Nom",
    col_template: "Modèle",
    col_progress: "Avancement",
    campaign_total: "Destinataires",
    campaign_pending: "À envoyer",
    campaign_queued: "En file",
    campaign_sent: "Envoyés",
    campaign_delivered: "Distribués",
    campaign_read: "Lus",
    campaign_failed: "Échecs",
    campaign_skipped: "Écartés",
    campaign_replied: "Ont répondu",
    campaign_opted_out: "Se sont désabonnés",
    campaign_cancelled: "Annulés",
    campaign_failed_by_code: "Échecs par code Meta",
    campaign_skipped_by_reason: "Écartés, par motif",
    campaign_skipped_list: "Destinataires écartés",
    campaign_eta: "Reste environ",
    campaign_start: "Démarrer",
    campaign_new_title: "Nouvelle campagne",
    campaign_new_name: "Nom",
    campaign_new_template: "Modèle approuvé",
    campaign_new_csv: "Destinataires : un fichier CSV (une colonne to, phone ou mobile, puis une colonne par paramètre du modèle : 1, 2… ; séparateur , ou ;)",
    campaign_new_at: "Début, facultatif (AAAA-MM-JJ HH:MM, heure de la boutique)",
    campaign_new_submit: "Créer le brouillon",
    campaign_new_no_templates: "Aucun modèle approuvé : synchronisez les modèles avec Meta (walua templates sync) avant de créer une campagne.",
    campaign_created: "Brouillon créé : vérifiez les destinataires écartés, puis démarrez la campagne.",
    campaign_csv_missing: "Choisissez le fichier CSV des destinataires.",
    campaign_csv_not_utf8: "Le fichier CSV doit être enregistré en UTF-8.",
    campaign_pause: "Mettre en pause",
    campaign_resume: "Reprendre",
    campaign_cancel: "Annuler la campagne",
    campaign_done_action: "C'est fait :",
    campaign_status_draft: "Brouillon",
    campaign_status_scheduled: "Programmée",
    campaign_status_running: "En cours",
    campaign_status_paused: "En pause",
    campaign_status_held: "Retenue (modèle en pause chez Meta)",
    campaign_status_cancelled: "Annulée",
    campaign_status_done: "Terminée",
    campaign_starts_at: "Démarre le",
    skip_invalid: "Numéro invalide",
    skip_duplicate: "Doublon",
    skip_opted_out: "Désabonné",
    skip_refused: "Refusé",
    ops_read_only: "Lecture seule : seul un administrateur peut agir ici.",
    outbox_queue: "En file",
    outbox_empty: "Rien en attente d'envoi.",
    outbox_troubles: "Envois en échec, annulés ou à l'issue inconnue",
    outbox_no_trouble: "Aucun envoi en difficulté.",
    older: "Plus anciens →",
    col_to: "Destinataire",
    col_from: "Client",
    col_kind: "Type",
    col_message: "Message",
    picker_placeholder: "— Choisir un modèle —",
    partner_ambiguous: "Même numéro chez d'autres partenaires Odoo :",
    opted_out_all: "Désabonné : plus aucun message de notre part",
    opted_out_marketing: "Désabonné des promotions",
    writable: "accessible en écriture",
    health_templates_none_title: "Synchronisation des modèles",
    health_templates_none: "aucun waba_id configuré : les modèles ne sont pas synchronisés avec Meta",
    col_state: "État",
    col_attempts: "Essais",
    col_reason: "Raison",
    col_script: "Script",
    col_version: "Version",
    col_loaded: "Chargé le",
    col_error: "Erreur",
    col_run: "Exécution",
    col_when: "Dernier échec",
    resent: "Remis en file : message",
    cancelled: "Envoi annulé : message",
    reload: "Recharger les scripts",
    reloaded: "Scripts rechargés",
    scripts_loaded: "chargé(s)",
    never: "jamais",
    quarantined: "Messages mis en quarantaine",
    quarantined_none: "Aucun message en quarantaine.",
    run_again: "Relancer les scripts",
    dispatched: "Scripts relancés pour le message",
    parked_help: "Les exécutions de hooks Odoo, de tâches planifiées et de messages qui ont échoué. En attente : walua réessaie. Garées : walua a abandonné, rejouez-les une fois la cause corrigée.",
    parked_none: "Aucune exécution en échec.",
    parked_state: "Garée",
    retrying_state: "En attente de nouvel essai",
    parked_expired: "Expirée (trop tard pour répondre)",
    replay: "Rejouer",
    replayed: "Rejouée :",
    unknown_action: "Action inconnue.",
    health_ok: "Tout fonctionne",
    health_degraded: "Dégradé : walua fonctionne, mais un service dont il dépend non",
    health_failing: "En panne : walua ne peut plus faire son travail",
    health_store: "Base de données",
    health_journal: "Journal des webhooks",
    health_backlog: "Webhooks à traiter",
    health_outbox: "Messages en file d'envoi",
    health_scripts: "Scripts chargés / en erreur",
    health_odoo: "Odoo",
    odoo_reachable: "joignable",
    odoo_unreachable: "injoignable",
    odoo_not_configured: "non configuré",
    health_templates: "Synchronisation des modèles, WABA",
    ago: "passées",

    older_conversations: "Plus anciennes",
    older_messages: "Messages plus anciens",
    newer_messages: "Messages plus récents",
    search_placeholder: "Nom, numéro, @pseudo ou mot du message",
    search_button: "Rechercher",
    search_contacts: "Contacts",
    search_messages: "Messages",
    search_none: "Aucun résultat.",
    stats: STATS_FR,
};

/// The statistics page's texts (`/console/stats`).
pub struct StatsStrings {
    /// Main navigation link and page title.
    pub title: &'static str,
    /// Period form: first day.
    pub from: &'static str,
    /// Period form: last day.
    pub to: &'static str,
    /// Period form: grouping.
    pub group_by: &'static str,
    /// Grouping: per day.
    pub by_day: &'static str,
    /// Grouping: per week.
    pub by_week: &'static str,
    /// Grouping: per month.
    pub by_month: &'static str,
    /// Period form: the button.
    pub show: &'static str,
    /// Presets: the last N days (N before it).
    pub last_days: &'static str,
    /// Presets: the last twelve months.
    pub last_year: &'static str,
    /// Still counting: message writes not counted yet (the count before it).
    pub pending: &'static str,
    /// The aggregates are being rebuilt.
    pub rebuilding: &'static str,
    /// Nothing in the period.
    pub empty: &'static str,
    /// Card: inbound messages.
    pub messages_in: &'static str,
    /// Card: outbound messages.
    pub messages_out: &'static str,
    /// Senders: the bot.
    pub bot: &'static str,
    /// Senders: agents.
    pub human: &'static str,
    /// Senders: the API and the CLI.
    pub integration: &'static str,
    /// Senders: campaigns.
    pub campaign: &'static str,
    /// Senders: hook and cron scripts.
    pub notification: &'static str,
    /// Senders: anything else.
    pub other: &'static str,
    /// Card: delivery rate.
    pub delivered: &'static str,
    /// Card: read rate.
    pub read: &'static str,
    /// Card: failure rate.
    pub failed: &'static str,
    /// "of" in "3 of 5".
    pub of: &'static str,
    /// Read rate: of the delivered messages.
    pub of_delivered: &'static str,
    /// Card: first-response time.
    pub first_response: &'static str,
    /// Median.
    pub median: &'static str,
    /// 90th percentile.
    pub p90: &'static str,
    /// Answers counted.
    pub answers: &'static str,
    /// Card: conversations.
    pub conversations: &'static str,
    /// Conversations started by customers.
    pub by_customers: &'static str,
    /// Conversations started by the business.
    pub by_business: &'static str,
    /// Card: billable messages.
    pub billable: &'static str,
    /// Free messages.
    pub free: &'static str,
    /// Chart: messages per period.
    pub chart_volume: &'static str,
    /// Chart: rates per period.
    pub chart_rates: &'static str,
    /// Chart: median first response per period.
    pub chart_response: &'static str,
    /// Legend: received.
    pub legend_in: &'static str,
    /// Legend: sent.
    pub legend_out: &'static str,
    /// Table: per template.
    pub per_template: &'static str,
    /// Table: per campaign.
    pub per_campaign: &'static str,
    /// Table: per script.
    pub per_script: &'static str,
    /// Table: per number.
    pub per_number: &'static str,
    /// Table: failures by code.
    pub failures: &'static str,
    /// Table: pricing categories.
    pub pricing: &'static str,
    /// Column: template.
    pub col_template: &'static str,
    /// Column: campaign.
    pub col_campaign: &'static str,
    /// Column: script.
    pub col_script: &'static str,
    /// Column: business number.
    pub col_number: &'static str,
    /// Column: received.
    pub col_in: &'static str,
    /// Column: sent.
    pub col_out: &'static str,
    /// Column: delivered.
    pub col_delivered: &'static str,
    /// Column: read.
    pub col_read: &'static str,
    /// Column: failed.
    pub col_failed: &'static str,
    /// Column: billable.
    pub col_billable: &'static str,
    /// Column: median bot answer.
    pub col_bot_reply: &'static str,
    /// Column: median agent answer.
    pub col_human_reply: &'static str,
    /// Column: Meta error code.
    pub col_code: &'static str,
    /// Column: how many.
    pub col_count: &'static str,
    /// Column: what it means.
    pub col_meaning: &'static str,
    /// Column: pricing category.
    pub col_category: &'static str,
    /// Column: free.
    pub col_free: &'static str,
    /// A number walua does not know.
    pub unknown_number: &'static str,
    /// None in the period (tables).
    pub none: &'static str,
    /// How the figures are counted, under the cards.
    pub help: &'static str,
    /// A bad period: not a date (the value before it).
    pub bad_date: &'static str,
    /// A bad period: the start (before) is after the end (after).
    pub reversed: (&'static str, &'static str),
    /// A bad period: too long (the number of days before it).
    pub too_long: &'static str,
    /// A bad period: an unknown grouping (the value before it).
    pub unknown_group: &'static str,
}

/// The statistics page in French.
pub const STATS_FR: StatsStrings = StatsStrings {
    title: "Statistiques",
    from: "Du",
    to: "au",
    group_by: "Regrouper",
    by_day: "par jour",
    by_week: "par semaine",
    by_month: "par mois",
    show: "Afficher",
    last_days: "derniers jours",
    last_year: "12 derniers mois",
    pending: "messages restent à compter : les chiffres seront complets dans quelques secondes.",
    rebuilding: "Les statistiques sont en cours de calcul à partir des messages enregistrés : les chiffres sont incomplets.",
    empty: "Aucun message sur cette période.",
    messages_in: "Messages reçus",
    messages_out: "Messages envoyés",
    bot: "bot",
    human: "agents",
    integration: "API",
    campaign: "campagnes",
    notification: "notifications",
    other: "autres",
    delivered: "Remis",
    read: "Lus",
    failed: "Échecs",
    of: "sur",
    of_delivered: "des messages remis",
    first_response: "Première réponse (médiane)",
    median: "médiane",
    p90: "90 %",
    answers: "réponses",
    conversations: "Conversations ouvertes",
    by_customers: "par les clients",
    by_business: "par l'entreprise",
    billable: "Messages facturables",
    free: "gratuits",
    chart_volume: "Messages reçus et envoyés",
    chart_rates: "Taux de remise, de lecture et d'échec",
    chart_response: "Première réponse, médiane (bot et agents)",
    legend_in: "Reçus",
    legend_out: "Envoyés",
    per_template: "Par modèle",
    per_campaign: "Par campagne",
    per_script: "Par script",
    per_number: "Par numéro",
    failures: "Échecs par code Meta",
    pricing: "Facturation par catégorie",
    col_template: "Modèle",
    col_campaign: "Campagne",
    col_script: "Script",
    col_number: "Numéro",
    col_in: "Reçus",
    col_out: "Envoyés",
    col_delivered: "Remis",
    col_read: "Lus",
    col_failed: "Échecs",
    col_billable: "Facturables",
    col_bot_reply: "Réponse bot",
    col_human_reply: "Réponse agents",
    col_code: "Code",
    col_count: "Nombre",
    col_meaning: "Signification",
    col_category: "Catégorie",
    col_free: "Gratuits",
    unknown_number: "inconnu",
    none: "Aucun sur cette période.",
    help: "Un message compte le jour où il a été reçu ou mis en file (fuseau des scripts) ; ses accusés de remise et de lecture suivent ce jour-là. Taux de remise et d'échec : sur les envois qui ont eu une réponse de Meta ; taux de lecture : sur les messages remis. Première réponse : du premier message du client resté sans réponse à la réponse suivante du bot, d'un agent ou de l'API, dans les 24 h. Une conversation s'ouvre avec un message qui suit 24 h de silence.",
    bad_date: "n'est pas une date (AAAA-MM-JJ).",
    reversed: ("La date de début", "est après la date de fin"),
    too_long: "jours : la période est trop longue (3 660 jours au plus).",
    unknown_group: "n'est pas un regroupement connu (jour, semaine, mois).",
};
