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
    window_closed_help: "Le client n'a pas écrit depuis plus de 24 heures : WhatsApp n'accepte plus de message libre. Envoyez un modèle approuvé (walua send --template) ou attendez qu'il vous écrive.",
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

    older_conversations: "Plus anciennes",
    older_messages: "Messages plus anciens",
    newer_messages: "Messages plus récents",
    search_placeholder: "Nom, numéro, @pseudo ou mot du message",
    search_button: "Rechercher",
    search_contacts: "Contacts",
    search_messages: "Messages",
    search_none: "Aucun résultat.",
};
