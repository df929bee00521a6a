/* cmd_inspect.c — `mailfeed inspect FILE|- [--json]`.
 *
 * Shows what mailfeed makes of one raw message, through the same sandboxed
 * parse worker the daemon uses, so a message that crashes the parser is
 * reported ("skipped: parser crashed ...") instead of killing the command.
 * The config is optional: without one the default limits apply.  The
 * classification is the daemon's own decision (decide_message) for the
 * mapping given with --mailbox (by default the only one of the config),
 * against the state read-only: post, comment, or skipped and why. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/decide.h"
#include "mailfeed/message.h"
#include "mailfeed/recipients.h"
#include "mailfeed/store.h"
#include "mailfeed/worker.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: mailfeed [-c FILE] inspect FILE|- [--mailbox NAME] [--json]\n\n"
		     "Reads one raw message (a file, or stdin with -) and shows its decoded\n"
		     "headers, the part chosen, the clean text, the removed part, hashtags,\n"
		     "thread keys, attachments and what the daemon would do with it in the\n"
		     "mapping NAME (default: the only mapping of the config): post, comment,\n"
		     "or skipped and why.\n");
}

/* Reads at most max bytes; -1 with a message when larger or unreadable. */
static char *read_input(const char *path, long long max, size_t *len, char *err, size_t errlen)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	struct buf b;
	buf_init(&b);
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if ((long long)(b.len + n) > max) {
			snprintf(
			    err, errlen,
			    "%s is larger than max_message_size (%lld bytes); mailfeed skips it",
			    path, max);
			buf_free(&b);
			if (f != stdin)
				fclose(f);
			return NULL;
		}
		buf_append(&b, chunk, n);
	}
	int bad = ferror(f);
	if (f != stdin)
		fclose(f);
	if (bad) {
		snprintf(err, errlen, "cannot read %s", path);
		buf_free(&b);
		return NULL;
	}
	*len = b.len;
	return buf_steal(&b);
}

static void print_list(const char *label, const struct strlist *l)
{
	if (!l->n)
		return;
	printf("%s:", label);
	for (size_t i = 0; i < l->n; i++)
		printf(" %s", l->v[i]);
	printf("\n");
}

static void print_text(const char *title, const char *text)
{
	printf("\n--- %s ---\n%s", title, text && *text ? text : "(empty)\n");
	if (text && *text && text[strlen(text) - 1] != '\n')
		printf("\n");
}

static void print_human(const struct mf_message *m, const struct decision *d, const char *mailbox,
			const struct strlist *mentionable, const struct route_why *route)
{
	char when[32];
	printf("Subject: %s\n", m->subject ? m->subject : "");
	printf("From: %s%s<%s>\n", m->from_name ? m->from_name : "", m->from_name ? " " : "",
	       m->from_email ? m->from_email : "");
	printf("Sender: %s\n", d->auth.why);
	if (m->reply_to)
		printf("Reply-To: %s\n", m->reply_to);
	printf("Date: %s\n", m->date ? time_iso(m->date, when, sizeof when) : "(none)");
	print_list("To", &m->to);
	print_list("Cc", &m->cc);
	print_list("Recipients (Delivered-To, X-Original-To)", &m->recipients_hint);
	print_list("Mention candidates (To/Cc looked up with mentions = yes)", mentionable);
	if (m->list_id)
		printf("List-Id: %s\n", m->list_id);
	printf("Message-ID: %s\n", m->message_id ? m->message_id : "(none)");
	printf("In-Reply-To: %s\n", m->in_reply_to ? m->in_reply_to : "(none)");
	print_list("References", &m->references);
	printf("Normalised subject: %s\n", m->subject_norm ? m->subject_norm : "");
	printf("Part: %s\n", m->part ? m->part : "none");
	if (m->warnings)
		printf("Warnings: %s\n", m->warnings);
	printf("Hashtags:");
	for (size_t i = 0; i < d->hashtags.n; i++)
		printf(" #%s", d->hashtags.v[i]);
	printf("%s\n", d->hashtags.n ? "" : " (none)");
	printf("Attachments:%s\n", m->n_attachments ? "" : " (none)");
	for (size_t i = 0; i < m->n_attachments; i++) {
		const struct mf_attachment *a = &m->attachments[i];
		printf("  %s (%s, %zu bytes%s, sha256 %s)\n", a->filename, a->content_type, a->size,
		       a->is_inline ? ", inline" : "", a->sha256);
	}
	if (d->action == DECIDE_SKIP)
		printf("Classification: %s: %s\n", decide_action_name(d->action), d->reason);
	else if (mailbox)
		printf("Classification: %s (mailbox %s)\n", decide_action_name(d->action), mailbox);
	else
		printf("Classification: %s (no mailbox: threads not looked up)\n",
		       decide_action_name(d->action));
	if (route)
		printf("Route: %s\n", route->text);
	print_text("text", m->text);
	print_text("removed", m->removed);
}

static void print_json(json_t *o)
{
	char *js = json_dumps(o, JSON_INDENT(2));
	printf("%s\n", js);
	free(js);
	json_decref(o);
}

/* A message the parser gave up. */
static void show_refused(const char *reason, int as_json)
{
	if (as_json)
		print_json(json_pack("{s:s,s:s,s:s,s:s,s:[],s:n,s:{s:n,s:n}}", "classification",
				     decide_action_name(DECIDE_SKIP), "reason", reason, "text", "",
				     "removed", "", "hashtags", "subject", "from", "name",
				     "email"));
	else
		printf("Classification: %s: %s\n", decide_action_name(DECIDE_SKIP), reason);
}

static json_t *strlist_json(const struct strlist *l)
{
	json_t *a = json_array();
	for (size_t i = 0; i < l->n; i++)
		json_array_append_new(a, json_string(l->v[i]));
	return a;
}

static void show_json(const struct mf_message *m, const struct decision *d,
		      const struct mf_mailbox *mb, const struct strlist *rcpt,
		      const struct route_why *route)
{
	json_t *o = message_to_json(m, 0);
	json_object_set_new(o, "mention_candidates", strlist_json(rcpt));
	json_object_set_new(o, "hashtags", strlist_json(&d->hashtags));
	json_object_set_new(o, "mailbox", mb ? json_string(mb->name) : json_null());
	/* whether mailfeed would act as the sender (auth.h) */
	json_object_set_new(
	    o, "sender",
	    json_pack("{s:b,s:s}", "verified", d->auth.verified, "check", d->auth.why));
	json_object_set_new(o, "classification", json_string(decide_action_name(d->action)));
	json_object_set_new(o, "reason",
			    d->action == DECIDE_SKIP ? json_string(d->reason) : json_null());
	json_object_set_new(o, "route", route ? route_why_json(route, &mb->routes) : json_null());
	print_json(o);
}

/* The daemon's decision on m in mapping mb (may be NULL), against the
 * state read-only, shown. */
static void show_decision(const struct mf_config *cfg, const struct mf_mailbox *mb,
			  const struct mf_message *m, const char *raw, size_t len, int as_json)
{
	struct decision d;
	struct db *db = NULL;
	int stale = 0;
	if (cfg && mb && !(db = store_open_readonly(cfg->gateway.state, &stale)) && stale)
		fprintf(stderr, STORE_STALE_NOTE, cfg->gateway.state);
	decide_message(db, cfg, mb, m, raw, len, &d);
	db_close(db);
	struct strlist rcpt = {0};
	recipients_mentionable(cfg, m, NULL, &rcpt);
	struct route_why why;
	int routed = decide_route(mb, m, &d, &rcpt, &why);
	if (as_json)
		show_json(m, &d, mb, &rcpt, routed ? &why : NULL);
	else
		print_human(m, &d, mb ? mb->name : NULL, &rcpt, routed ? &why : NULL);
	strlist_free(&rcpt);
	decision_free(&d);
}

/* The arguments: 0, or the exit status (usage shown). */
static int parse_args(int argc, char **argv, const char **path, const char **mailbox, int *as_json)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			*as_json = 1;
		} else if (!strcmp(argv[i], "--mailbox") && i + 1 < argc) {
			*mailbox = argv[++i];
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return -1;
		} else if (!*path && (strcmp(argv[i], "-") == 0 || argv[i][0] != '-')) {
			*path = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!*path) {
		usage(stderr);
		return 2;
	}
	return 0;
}

/* The mapping asked for, or the only one of the config; NULL with *bad
 * set when the one asked for is not there. */
static const struct mf_mailbox *pick_mailbox(const struct mf_config *cfg, const char *mailbox,
					     const char *config, int *bad)
{
	*bad = 0;
	if (mailbox) {
		const struct mf_mailbox *mb = cfg ? config_mailbox(cfg, mailbox) : NULL;
		if (!mb) {
			fprintf(stderr, "mailfeed: no [mailbox %s] in %s\n", mailbox, config);
			*bad = 1;
		}
		return mb;
	}
	return cfg && cfg->n_mailboxes == 1 ? &cfg->mailboxes[0] : NULL;
}

int cmd_inspect(int argc, char **argv, const char *config)
{
	const char *path = NULL, *mailbox = NULL;
	int as_json = 0, bad;
	int rc = parse_args(argc, argv, &path, &mailbox, &as_json);
	if (rc)
		return rc < 0 ? 0 : rc;
	struct mf_config *cfg = NULL;
	if (access(config, F_OK) == 0) {
		cfg = cli_load_config(config);
		if (!cfg)
			return 2;
	}
	const struct mf_mailbox *mb = pick_mailbox(cfg, mailbox, config, &bad);
	if (bad) {
		config_free(cfg);
		return 2;
	}
	const struct mf_gateway *gw = cfg ? &cfg->gateway : &config_default()->gateway;
	long long max = gw->max_message_size;

	char err[512];
	size_t len = 0;
	char *raw = read_input(path, max, &len, err, sizeof err);
	if (!raw) {
		fprintf(stderr, "mailfeed: %s\n", err);
		config_free(cfg);
		return 1;
	}
	struct parse_worker *w = worker_new(gw);
	struct mf_message *m = NULL;
	char reason[512] = "";
	rc = worker_parse(w, raw, len, &m, reason, sizeof reason);
	worker_free(w);
	int status = 0;
	if (rc < 0) {
		fprintf(stderr, "mailfeed: %s\n", reason);
		status = 1;
	} else if (rc > 0) {
		show_refused(reason, as_json);
	} else {
		show_decision(cfg, mb, m, raw, len, as_json);
	}
	free(raw);
	message_free(m);
	config_free(cfg);
	return status;
}
