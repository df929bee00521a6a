/* cmd_preview.c — `mailfeed preview MAILBOX [--limit N] [--json]`: a dry
 * run of one mapping.  Fetches the newest N messages of its folder with
 * BODY.PEEK (the server keeps every flag), runs them through the same
 * worker and the same decision (decide_message) as the daemon, and prints
 * what each would become.  Nothing is written: the state is opened read-only. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/decide.h"
#include "mailfeed/imap.h"
#include "mailfeed/message.h"
#include "mailfeed/recipients.h"
#include "mailfeed/store.h"
#include "mailfeed/worker.h"

struct preview {
	const struct mf_config *cfg;
	const struct mf_mailbox *mb;
	struct parse_worker *worker;
	struct db *db; /* read-only, may be NULL */
	json_t *out;
};

/* Puts the decision into o: classification, reason, the hashtags the
 * post gets (the mapping's included) and the text. */
static void put_decision(json_t *o, const struct decision *d)
{
	json_t *tags = json_array();
	for (size_t i = 0; i < d->hashtags.n; i++)
		json_array_append_new(tags, json_string(d->hashtags.v[i]));
	json_object_set_new(o, "hashtags", tags);
	json_object_set_new(o, "classification", json_string(decide_action_name(d->action)));
	if (d->action == DECIDE_SKIP)
		json_object_set_new(o, "reason", json_string(d->reason));
}

static int preview_one(const struct imap_fetched *f, void *arg)
{
	struct preview *p = arg;
	json_t *o;
	char reason[300];
	struct mf_message *m = NULL;
	if (!f->raw) {
		o = json_pack("{s:I,s:s,s:s}", "uid", (json_int_t)f->uid, "classification",
			      decide_action_name(DECIDE_SKIP), "reason",
			      "too large (max_message_size)");
		json_array_append_new(p->out, o);
		return 0;
	}
	int rc = worker_parse(p->worker, f->raw, f->raw_len, &m, reason, sizeof reason);
	if (rc != 0) {
		o = json_pack("{s:I,s:s,s:s}", "uid", (json_int_t)f->uid, "classification",
			      decide_action_name(DECIDE_SKIP), "reason",
			      rc > 0 ? reason : "parse worker unavailable");
		json_array_append_new(p->out, o);
		return 0;
	}
	o = message_to_json(m, 0);
	json_object_set_new(o, "uid", json_integer(f->uid));
	struct decision d;
	if (decide_message(p->db, p->cfg, p->mb, m, f->raw, f->raw_len, &d) < 0)
		json_object_set_new(o, "note",
				    json_string("the state could not be read: threads "
						"already known are not shown"));
	put_decision(o, &d);
	if (d.action != DECIDE_SKIP) {
		struct strlist rcpt = {0};
		recipients_mentionable(p->cfg, m, NULL, &rcpt);
		json_t *ra = json_array();
		for (size_t i = 0; i < rcpt.n; i++)
			json_array_append_new(ra, json_string(rcpt.v[i]));
		json_object_set_new(o, "mention_candidates", ra);
		struct route_why why;
		if (decide_route(p->mb, m, &d, &rcpt, &why))
			json_object_set_new(o, "route", route_why_json(&why, &p->mb->routes));
		strlist_free(&rcpt);
		int reply = m->in_reply_to || m->references.n > 0;
		if (d.action == DECIDE_POST && reply)
			json_object_set_new(
			    o, "note",
			    json_string("a reply whose thread is not known yet: becomes a post "
					"unless its parent arrives first"));
	}
	decision_free(&d);
	json_array_append_new(p->out, o);
	message_free(m);
	return 0;
}

static void print_human(json_t *arr, int mentions_on)
{
	size_t i;
	json_t *o;
	json_array_foreach(arr, i, o)
	{
		json_t *from = json_object_get(o, "from");
		const char *cls = json_string_value(json_object_get(o, "classification"));
		printf("UID %lld: %s", (long long)json_integer_value(json_object_get(o, "uid")),
		       cls ? cls : "?");
		if (json_object_get(o, "reason"))
			printf(" (%s)", json_string_value(json_object_get(o, "reason")));
		printf("\n");
		if (json_object_get(o, "subject"))
			printf("  subject:  %s\n",
			       json_string_value(json_object_get(o, "subject")));
		if (from)
			printf("  author:   %s <%s>\n",
			       json_string_value(json_object_get(from, "name"))
				   ? json_string_value(json_object_get(from, "name"))
				   : "",
			       json_string_value(json_object_get(from, "email"))
				   ? json_string_value(json_object_get(from, "email"))
				   : "");
		json_t *tags = json_object_get(o, "hashtags");
		if (json_array_size(tags) > 0) {
			size_t k;
			json_t *t;
			printf("  hashtags:");
			json_array_foreach(tags, k, t) printf(" #%s", json_string_value(t));
			printf("\n");
		}
		json_t *rcpt = json_object_get(o, "mention_candidates");
		if (json_array_size(rcpt) > 0) {
			size_t k;
			json_t *t;
			printf("  mentions: ");
			json_array_foreach(rcpt, k, t)
			    printf("%s%s", k ? ", " : "", json_string_value(t));
			printf(" (those who are users of the feed service%s)\n",
			       mentions_on ? "" : "; mentions = no");
		}
		const char *route =
		    json_string_value(json_object_get(json_object_get(o, "route"), "text"));
		if (route)
			printf("  route:    %s\n", route);
		const char *text = json_string_value(json_object_get(o, "text"));
		if (text) {
			printf("  text:\n");
			for (const char *l = text; *l;) {
				const char *e = strchr(l, '\n');
				size_t n = e ? (size_t)(e - l) : strlen(l);
				printf("    | %.*s\n", (int)n, l);
				l += n + (e ? 1 : 0);
			}
		}
		printf("\n");
	}
}

#define PREVIEW_USAGE "usage: mailfeed [-c FILE] preview MAILBOX [--limit N] [--json]\n"

/* The arguments: 0, or the exit status (usage shown). */
static int parse_args(int argc, char **argv, const char **name, long *limit, int *as_json)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			*as_json = 1;
		} else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
			*limit = strtol(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--help") == 0) {
			printf(PREVIEW_USAGE
			       "  Shows what the newest N (default 10) messages of a mapping would "
			       "become,\n  without posting or changing anything.\n");
			return -1;
		} else if (argv[i][0] != '-' && !*name) {
			*name = argv[i];
		} else {
			fputs(PREVIEW_USAGE, stderr);
			return 2;
		}
	}
	if (!*name || *limit <= 0) {
		fputs(PREVIEW_USAGE, stderr);
		return 2;
	}
	return 0;
}

/* Fetches the newest limit of uids (of the selected folder) and shows what
 * each would become.  0, or 1 (message printed). */
static int preview_fetch(struct imap_session *s, struct preview *p, const uint32_t *uids, size_t n,
			 long limit, int as_json)
{
	const struct mf_config *cfg = p->cfg;
	char err[512];
	int rc = 1;
	int stale = 0;
	if (!(p->db = store_open_readonly(cfg->gateway.state, &stale)) && stale)
		fprintf(stderr, STORE_STALE_NOTE, cfg->gateway.state);
	p->worker = worker_new(&cfg->gateway);
	p->out = json_array();
	size_t first = n > (size_t)limit ? n - (size_t)limit : 0;
	if (imap_fetch(s, uids + first, n - first, cfg->gateway.max_message_size, preview_one, p,
		       err, sizeof err) < 0) {
		fprintf(stderr, "mailfeed: %s\n", err);
	} else {
		if (as_json) {
			char *js = json_dumps(p->out, JSON_COMPACT);
			printf("%s\n", js);
			free(js);
		} else {
			print_human(p->out, cfg->feed.mentions);
		}
		rc = 0;
	}
	json_decref(p->out);
	worker_free(p->worker);
	db_close(p->db);
	return rc;
}

int cmd_preview(int argc, char **argv, const char *config)
{
	const char *name = NULL;
	long limit = 10;
	int as_json = 0, rc = 1;
	char err[512];

	if ((rc = parse_args(argc, argv, &name, &limit, &as_json)) != 0)
		return rc < 0 ? 0 : rc;
	rc = 1;
	struct mf_config *cfg = cli_load_config(config);
	if (!cfg)
		return 2;
	struct preview p = {.cfg = cfg, .mb = config_mailbox(cfg, name)};
	if (!p.mb) {
		fprintf(stderr, "mailfeed: no [mailbox %s] in %s\n", name, config);
		config_free(cfg);
		return 2;
	}
	struct imap_session *s = imap_open(p.mb->acct, err, sizeof err);
	if (!s) {
		fprintf(stderr, "mailfeed: %s\n", err);
		config_free(cfg);
		return 1;
	}
	struct imap_folder_info info;
	uint32_t *uids = NULL;
	size_t n = 0;
	if (imap_select(s, p.mb->folder, &info, err, sizeof err) < 0 ||
	    imap_search_from(s, 1, &uids, &n, err, sizeof err) < 0)
		fprintf(stderr, "mailfeed: %s\n", err);
	else
		rc = preview_fetch(s, &p, uids, n, limit, as_json);
	free(uids);
	imap_close(s);
	config_free(cfg);
	return rc;
}
