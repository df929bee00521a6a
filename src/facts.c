/* facts.c — the facts classification needs, read from a message's headers.
 *
 * Auto-replies (Auto-Submitted, out-of-office subjects in many languages),
 * bounces (DSN reports, mailer-daemon senders, bounce subjects), bulk mail,
 * List-Id and mailfeed's own loop markers.  Config-independent: the
 * decision itself is classify.c's.  Runs inside the parse worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/facts.h"
#include "mailfeed/mime.h"

static int starts_ci(const char *s, const char *prefix)
{
	return !strncasecmp(s, prefix, strlen(prefix));
}

/* Subjects that auto-responders put first.  The first group is
 * unambiguous; the second only counts when followed by ':' or alone,
 * since a person may write "Absence of data". */
static const char *ooo_subject(const char *subject)
{
	static const char *always[] = {
	    "Automatic reply",
	    "Auto reply",
	    "Autoreply",
	    "Auto-reply",
	    "Auto response",
	    "Automatische Antwort",
	    "Réponse automatique",
	    "Respuesta automática",
	    "Respuesta automatica",
	    "Risposta automatica",
	    "Automatisch antwoord",
	    "Resposta automática",
	    "Autosvar",
	    "Automaattinen vastaus",
	    "Automatyczna odpowiedź",
	    "Automatická odpověď",
	    "Автоматический ответ",
	    "自动回复",
	    "自動回覆",
	    "自動返信",
	    "自動応答",
	    "자동 회신",
	    "Otomatik yanıt",
	    "Αυτόματη απάντηση",
	    "Automatikus válasz",
	};
	static const char *with_colon[] = {
	    "Out of Office",
	    "Out of the office",
	    "Abwesenheitsnotiz",
	    "Abwesend",
	    "Absence",
	    "Absent",
	    "Fuori ufficio",
	    "Fuori sede",
	    "Afwezig",
	    "Afwezigheid",
	    "Frånvaro",
	    "Fraværende",
	    "Fravær",
	    "Poissa",
	    "Poissaolo",
	    "Nieobecność",
	    "Ausente",
	    "Fora do escritório",
	    "Не в офисе",
	    "不在",
	};
	if (!subject)
		return NULL;
	for (size_t i = 0; i < sizeof always / sizeof always[0]; i++)
		if (starts_ci(subject, always[i]))
			return always[i];
	for (size_t i = 0; i < sizeof with_colon / sizeof with_colon[0]; i++) {
		size_t n = strlen(with_colon[i]);
		if (!starts_ci(subject, with_colon[i]))
			continue;
		const char *r = subject + n;
		while (*r == ' ')
			r++;
		if (!*r || *r == ':' || starts_ci(r, "AutoReply") || starts_ci(r, "(") ||
		    !strncmp(r, "\xef\xbc\x9a", 3))
			return with_colon[i];
	}
	return NULL;
}

/* Whether needle occurs in s, ASCII case folded. */
static int contains_ci(const char *s, const char *needle)
{
	return s && strcasestr(s, needle) != NULL;
}

/* The lexicon of delivery reports' subjects: what they put first, */
static const char *const bounce_starts[] = {
    "Undelivered Mail Returned to Sender",
    "Delivery Status Notification",
    "Mail delivery failed",
    "Mail Delivery Warning",
    "Mail Delivery Failure",
    "Mail Delivery System",
    "Undeliverable:",
    "Undeliverable",
    "Undelivered mail",
    "failure notice",
    "Returned mail",
    "Delivery failure",
    "Delivery failed",
    "Delivery delayed",
    "Delivery Notification",
    "Delayed Mail",
    "Message delayed",
    "Message delivery failure",
    "Mail System Error",
    "Warning: could not send message",
    "Warning: message",
    "Nicht zustellbar",
    "Unzustellbar",
    "Zustellung verzögert",
    "Non remis",
    "Non distribué",
    "Remise différée",
    "Retard de remise",
    "Non recapitabile",
    "Recapito ritardato",
    "Onbestelbaar",
    "Vertraagde bezorging",
    "Olevererbart",
    "Kan inte levereras",
    "Ikke leveret",
    "Kan ikke leveres",
    "No se puede entregar",
    "No entregado",
    "Entrega retrasada",
    "Não entregue",
    "Não é possível entregar",
    "Nie można dostarczyć",
    "Niedostarczona",
    "Не доставлено",
    "Недоставлено",
    "Nedoručitelné",
    "Kézbesíthetetlen",
    "Toimitus epäonnistui",
    "Teslim edilemedi",
    "配信不能",
    "未送达",
    "無法傳遞",
    "전달되지 않음",
};
/* and the same words after a system's tag or a warning word ("[Postmaster]
 * Unzustellbar: …", "Warning: delivery delayed"); never in a person's
 * sentence ("Why was it undeliverable?", "Re: delivery failed?") */
static const char *const bounce_after_tag[] = {
    "delivery failed",	     "delivery has failed",    "delivery failure",
    "delivery delayed",	     "delayed delivery",       "mail delivery warning",
    "undeliverable",	     "unzustellbar",	       "non remis",
    "returned to sender",    "could not be delivered", "delivery status notification",
    "message not delivered", "not delivered",
};

/* The entry of the lexicon s starts with (case-insensitive), or NULL. */
static const char *lexicon_find(const char *const *lex, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (starts_ci(s, lex[i]))
			return lex[i];
	return NULL;
}

#define LEXICON_FIND(lex, s) lexicon_find(lex, sizeof lex / sizeof lex[0], s)

/* The subject after at most four system tags or warning words ("[Postmaster]",
 * "Warning:", "notice:", "Warning -", "alert:"). */
static const char *after_tags(const char *subject)
{
	const char *rest = subject;
	for (int k = 0; k < 4; k++) {
		while (*rest == ' ' || *rest == '*')
			rest++;
		if (*rest == '[' && strchr(rest, ']'))
			rest = strchr(rest, ']') + 1;
		else if (starts_ci(rest, "warning:") || starts_ci(rest, "notice:"))
			rest = strchr(rest, ':') + 1;
		else if (starts_ci(rest, "warning -") || starts_ci(rest, "alert:"))
			rest = strchr(rest, rest[5] == ':' ? ':' : '-') + 1;
		else
			break;
	}
	return rest;
}

/* The lexicon entry that makes subject a delivery report's, or NULL. */
static const char *bounce_subject(const char *subject)
{
	const char *hit, *rest;
	if (!subject)
		return NULL;
	if ((hit = LEXICON_FIND(bounce_starts, subject)))
		return hit;
	rest = after_tags(subject);
	if (rest == subject)
		return NULL;
	if ((hit = LEXICON_FIND(bounce_after_tag, rest)))
		return hit;
	return LEXICON_FIND(bounce_starts, rest);
}

/* Local parts and display names of delivery systems. */
static int is_mailer_daemon(const char *addr)
{
	char local[64];
	static const char *locals[] = {"mailer-daemon", "mailer_daemon", "mailerdaemon",
				       "postmaster",	"mail-daemon",	 "maildaemon"};
	if (!addr)
		return 0;
	snprintf(local, sizeof local, "%.*s", (int)strcspn(addr, "@"), addr);
	for (char *p = local; *p; p++)
		*p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
	for (size_t i = 0; i < sizeof locals / sizeof locals[0]; i++)
		if (!strcmp(local, locals[i]))
			return 1;
	return 0;
}

/* The address inside a header value ("Name <a@b>", "<a@b>", "a@b"); "" for
 * the null path "<>". Owned. */
static char *header_address(const char *v)
{
	const char *lt = strrchr(v, '<'), *gt = lt ? strchr(lt, '>') : NULL;
	char *a = lt && gt ? xstrndup(lt + 1, (size_t)(gt - lt - 1)) : xstrdup(v);
	char *t = str_trim(a);
	memmove(a, t, strlen(t) + 1);
	return a;
}

/* Headers that mailing services (ESPs) put on campaigns. */
static const char *esp_header(const struct mime_headers *h)
{
	static const char *names[] = {
	    "Feedback-ID",
	    "X-Feedback-ID",
	    "X-CSA-Complaints",
	    "X-Mailchimp-Campaign",
	    "X-MC-User",
	    "X-Campaign",
	    "X-CampaignID",
	    "X-Campaign-Id",
	    "X-Mailjet-Campaign",
	    "X-Mailin-Campaign",
	    "X-SFMC-Stack",
	    "X-rpcampaign",
	    "X-Listmonk-Campaign",
	    "X-Newsletter",
	    "X-Mailgun-Campaign-Id",
	    "X-SES-Configuration-Set-Marketing",
	};
	static const char *mailers[] = {"mailchimp",  "sendinblue",	  "brevo",	"mailjet",
					"phplist",    "mautic",		  "mailerlite", "sendy",
					"acymailing", "campaign monitor", "newsletter"};
	const char *v;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (mime_header_get(h, names[i]))
			return names[i];
	if ((v = mime_header_get(h, "X-Mailer")))
		for (size_t i = 0; i < sizeof mailers / sizeof mailers[0]; i++)
			if (contains_ci(v, mailers[i]))
				return "X-Mailer";
	return NULL;
}

static char *lower_token(const char *v)
{
	char *s = xstrdup(v ? v : "");
	s[strcspn(s, ";(")] = 0;
	char *t = str_trim(s);
	memmove(s, t, strlen(t) + 1);
	str_lower(s);
	return s;
}

static int is_no(const char *v)
{
	char *t = lower_token(v);
	int no = !*t || !strcmp(t, "no") || !strcmp(t, "false") || !strcmp(t, "0");
	free(t);
	return no;
}

/* The List-Id mailfeed puts on its own mail names it: a "mailfeed" label. */
static int list_id_is_ours(const char *id)
{
	if (!id)
		return 0;
	const char *p = strcasestr(id, "mailfeed");
	return p && (p == id || p[-1] == '.') && (p[8] == '.' || p[8] == 0);
}

/* Auto-reply facts: the headers that say so, or an out-of-office subject. */
static void facts_auto(struct mf_message *m, const struct mime_headers *h)
{
	const char *v;
	if ((v = mime_header_get(h, "Auto-Submitted")) && !is_no(v)) {
		char *t = lower_token(v);
		m->auto_reason = xasprintf("Auto-Submitted: %s", t);
		free(t);
	} else if ((v = mime_header_get(h, "X-Autoreply")) && !is_no(v)) {
		m->auto_reason = xstrdup("X-Autoreply");
	} else if ((v = mime_header_get(h, "X-Autorespond")) && !is_no(v)) {
		m->auto_reason = xstrdup("X-Autorespond");
	} else if ((v = mime_header_get(h, "Precedence")) && starts_ci(v, "auto_reply")) {
		m->auto_reason = xstrdup("Precedence: auto_reply");
	} else if ((v = ooo_subject(m->subject))) {
		m->auto_reason = xasprintf("out-of-office subject \"%s\"", v);
	}
}

/* A multipart/report: a read receipt is automatic mail, any other report
 * a bounce. */
static void facts_report(struct mf_message *m, const struct mime_headers *h)
{
	const char *ct = mime_header_get(h, "Content-Type");
	char *rt = ct ? mime_param_2231(ct, "report-type") : NULL;
	if (ct && starts_ci(ct, "multipart/report")) {
		if (rt && !strcasecmp(rt, "disposition-notification")) {
			if (!m->auto_reason)
				m->auto_reason = xstrdup("read receipt (disposition-notification)");
		} else {
			m->bounce_reason = rt ? xasprintf("multipart/report; report-type=%s", rt)
					      : xstrdup("multipart/report");
		}
	}
	free(rt);
}

/* The bounce facts after the report type: the mailer daemon as sender or
 * envelope, a null envelope, a delivery system's name or subject. */
static void facts_bounce(struct mf_message *m, const struct mime_headers *h)
{
	const char *v;
	if (!m->bounce_reason && is_mailer_daemon(m->from_email)) {
		char local[64];
		snprintf(local, sizeof local, "%.*s", (int)strcspn(m->from_email, "@"),
			 m->from_email);
		m->bounce_reason = xasprintf("From: %s", local);
	}
	/* the envelope of a delivery report is null or the mailer daemon's */
	if (!m->bounce_reason && (v = mime_header_get(h, "Return-Path"))) {
		char *a = header_address(v);
		if (!*a && !m->auto_reason)
			m->bounce_reason = xstrdup("Return-Path: <> (null sender)");
		else if (is_mailer_daemon(a))
			m->bounce_reason = xasprintf("Return-Path: %.80s", a);
		free(a);
	}
	if (!m->bounce_reason && (v = mime_header_get(h, "Sender"))) {
		char *a = header_address(v);
		if (is_mailer_daemon(a))
			m->bounce_reason = xasprintf("Sender: %.80s", a);
		free(a);
	}
	if (!m->bounce_reason && m->from_name &&
	    (starts_ci(m->from_name, "Mail Delivery Subsystem") ||
	     starts_ci(m->from_name, "Mail Delivery System") ||
	     starts_ci(m->from_name, "Microsoft Outlook") ||
	     starts_ci(m->from_name, "MAILER-DAEMON")) &&
	    bounce_subject(m->subject))
		m->bounce_reason = xasprintf("From: %.80s", m->from_name);
	if (!m->bounce_reason && (v = bounce_subject(m->subject)))
		m->bounce_reason = xasprintf("subject \"%s\"", v);
}

/* Bulk facts and the list id.  A discussion list (people post to it) is
 * ordinary mail, whatever else its software adds; newsletters and
 * campaigns are bulk. */
static void facts_bulk(struct mf_message *m, const struct mime_headers *h)
{
	const char *v;
	const char *post = mime_header_get(h, "List-Post");
	int discussion = post && !is_no(post) && mime_header_get(h, "List-Id");
	if ((v = mime_header_get(h, "Precedence"))) {
		char *t = lower_token(v);
		m->bulk = !strcmp(t, "bulk") || !strcmp(t, "junk");
		free(t);
	}
	if (!m->bulk && mime_header_get(h, "List-Unsubscribe-Post"))
		m->bulk = 1;
	if (!m->bulk && esp_header(h))
		m->bulk = 1;
	if (discussion)
		m->bulk = 0;
	if ((v = mime_header_get(h, "List-Id"))) {
		char *d = mime_decode_header(v);
		const char *lt = strrchr(d, '<'), *gt = lt ? strchr(lt, '>') : NULL;
		m->list_id = lt && gt ? xstrndup(lt + 1, (size_t)(gt - lt - 1)) : xstrdup(d);
		free(d);
	}
}

void facts_gather(struct mf_message *m, const struct mime_headers *h)
{
	facts_auto(m, h);
	facts_report(m, h);
	facts_bounce(m, h);
	facts_bulk(m, h);
	if (mime_header_get(h, "X-Mailfeed-Loop"))
		m->own = 1;
	const char *v = mime_header_get(h, "Auto-Submitted");
	if (v && starts_ci(v, "auto-generated") && list_id_is_ours(m->list_id))
		m->own = 1;
}
