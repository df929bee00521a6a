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

static const char *bounce_subject(const char *subject)
{
	static const char *subjects[] = {
	    "Undelivered Mail Returned to Sender",
	    "Delivery Status Notification (Failure)",
	    "Delivery Status Notification (Delay)",
	    "Mail delivery failed",
	    "Undeliverable:",
	    "Undeliverable mail",
	    "failure notice",
	    "Returned mail",
	    "Delivery failure",
	    "Mail System Error",
	    "Nicht zustellbar:",
	    "Unzustellbar:",
	    "Non remis :",
	    "Non recapitabile:",
	    "Onbestelbaar:",
	    "Olevererbart:",
	};
	if (!subject)
		return NULL;
	for (size_t i = 0; i < sizeof subjects / sizeof subjects[0]; i++)
		if (starts_ci(subject, subjects[i]))
			return subjects[i];
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

void facts_gather(struct mf_message *m, const struct mime_headers *h)
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
	if (!m->bounce_reason && m->from_email) {
		char local[64];
		snprintf(local, sizeof local, "%.*s", (int)strcspn(m->from_email, "@"),
			 m->from_email);
		if (!strcmp(local, "mailer-daemon") || !strcmp(local, "postmaster"))
			m->bounce_reason = xasprintf("From: %s", local);
	}
	if (!m->bounce_reason && (v = bounce_subject(m->subject)))
		m->bounce_reason = xasprintf("subject \"%s\"", v);

	if ((v = mime_header_get(h, "Precedence"))) {
		char *t = lower_token(v);
		m->bulk = !strcmp(t, "bulk") || !strcmp(t, "junk");
		free(t);
	}
	if ((v = mime_header_get(h, "List-Id"))) {
		char *d = mime_decode_header(v);
		const char *lt = strrchr(d, '<'), *gt = lt ? strchr(lt, '>') : NULL;
		m->list_id = lt && gt ? xstrndup(lt + 1, (size_t)(gt - lt - 1)) : xstrdup(d);
		free(d);
	}
	if (mime_header_get(h, "X-Mailfeed-Loop"))
		m->own = 1;
	v = mime_header_get(h, "Auto-Submitted");
	if (v && starts_ci(v, "auto-generated") && list_id_is_ours(m->list_id))
		m->own = 1;
}
