/* feedprobe.c — drives one feed backend directly, for the integration tests
 * of the HTTP backends: loads a config, opens [feed] backend, reads one JSON
 * request on stdin and prints one JSON answer on stdout.
 *
 *   {"op": "deliver", "items": [ITEM, ...]}
 *       -> {"results": [{"status": "ok|retry|permanent", "remote_id": ...,
 *                        "retry_after": N, "error": "...",
 *                        "uploaded": [[ATTACHMENT_INDEX, NOTE], ...]}]}
 *   {"op": "reconcile", "item": ITEM}     -> {"found": 1|0|-1, "remote_id": ...}
 *   {"op": "read", "group": G, "since": T} -> {"rc": 0, "entries": [...]}
 *
 * ITEM: {"id", "key", "kind": "post|comment", "group", "parent", "created",
 *        "known": [remote ids other items hold],
 *        "author_name", "author_email", "verified", "subject", "text", "hashtags": [...],
 *        "recipients": [...],
 *        "attachments": [{"filename", "content_type", "data" | "size", "remote"}]}
 * An attachment given by "size" is that many 'x' bytes; "remote" is the note
 * of an earlier upload, as the backend reported it in "uploaded". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mailfeed/config.h"
#include "mailfeed/feed.h"
#include "mailfeed/log.h"

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* "known": remote ids that other items already hold. */
static int probe_known(void *arg, const char *remote)
{
	size_t i;
	json_t *v;
	json_array_foreach((json_t *)arg, i, v)
	{
		if (json_is_string(v) && strcmp(json_string_value(v), remote) == 0)
			return 1;
	}
	return 0;
}

/* Fills it from j; allocations go to the tags (hashtags, then recipients)
 * and *datas. */
static void probe_item(json_t *j, struct feed_item *it, struct strlist tags[2],
		       struct feed_attachment **atts, unsigned char ***datas)
{
	memset(it, 0, sizeof(*it));
	it->id = json_integer_value(json_object_get(j, "id"));
	it->key = jstr(j, "key");
	const char *kind = jstr(j, "kind");
	it->kind = kind && strcmp(kind, "comment") == 0 ? FEED_COMMENT : FEED_POST;
	it->group = jstr(j, "group");
	it->parent_remote_id = jstr(j, "parent");
	it->author_name = jstr(j, "author_name");
	it->author_email = jstr(j, "author_email");
	/* a verified sender unless the item says "verified": false */
	json_t *verified = json_object_get(j, "verified");
	it->author_verified = verified ? json_is_true(verified) : 1;
	it->subject = jstr(j, "subject");
	it->text = jstr(j, "text");
	it->created = (time_t)json_integer_value(json_object_get(j, "created"));
	if (json_is_array(json_object_get(j, "known"))) {
		it->remote_known = probe_known;
		it->remote_known_arg = json_object_get(j, "known");
	}
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(j, "hashtags"), i, v)
	    strlist_add(&tags[0], json_string_value(v));
	it->hashtags = &tags[0];
	json_array_foreach(json_object_get(j, "recipients"), i, v)
	    strlist_add(&tags[1], json_string_value(v));
	it->recipients = &tags[1];
	json_t *as = json_object_get(j, "attachments");
	size_t n = json_array_size(as);
	*atts = xcalloc(n ? n : 1, sizeof(**atts));
	*datas = xcalloc(n ? n : 1, sizeof(**datas));
	json_array_foreach(as, i, v)
	{
		struct feed_attachment *a = &(*atts)[i];
		a->filename = jstr(v, "filename");
		a->content_type = jstr(v, "content_type");
		a->remote = jstr(v, "remote");
		const char *d = jstr(v, "data");
		if (d) {
			a->size = strlen(d);
			(*datas)[i] = (unsigned char *)xstrdup(d);
		} else {
			a->size = (size_t)json_integer_value(json_object_get(v, "size"));
			(*datas)[i] = xmalloc(a->size + 1);
			memset((*datas)[i], 'x', a->size);
		}
		a->data = (*datas)[i];
	}
	it->attachments = *atts;
	it->n_attachments = n;
}

/* The uploads the backend reports, as [item][[attachment, note], ...]. */
struct probe_uploads {
	pthread_mutex_t mu;
	const struct feed_item *items;
	json_t *by_item; /* array of arrays */
};

static void probe_uploaded(void *arg, const struct feed_attachment *a, const char *remote)
{
	struct probe_uploads *u = arg;
	pthread_mutex_lock(&u->mu);
	for (size_t i = 0; i < json_array_size(u->by_item); i++) {
		const struct feed_item *it = &u->items[i];
		if (a >= it->attachments && a < it->attachments + it->n_attachments)
			json_array_append_new(
			    json_array_get(u->by_item, i),
			    json_pack("[I, s]", (json_int_t)(a - it->attachments), remote));
	}
	pthread_mutex_unlock(&u->mu);
}

static const char *status_name(enum feed_status s)
{
	return s == FEED_OK ? "ok" : s == FEED_RETRY ? "retry" : "permanent";
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: feedprobe CONFIG < request.json\n");
		return 2;
	}
	log_set_level(LOG_LVL_DEBUG);
	struct mf_diag diag = {0};
	struct mf_config *cfg = config_load(argv[1], 0, &diag);
	if (!cfg) {
		for (size_t i = 0; i < diag.msgs.n; i++)
			fprintf(stderr, "%s\n", diag.msgs.v[i]);
		diag_free(&diag);
		return 2;
	}
	diag_free(&diag);
	const struct feed_backend_ops *ops = cfg->feed.backend == FEED_CHATTER ? &feed_chatter_ops
					     : cfg->feed.backend == FEED_MATTERMOST
						 ? &feed_mattermost_ops
						 : NULL;
	json_error_t jerr;
	json_t *req = json_loadf(stdin, 0, &jerr);
	if (!ops || !req) {
		fprintf(stderr, "feedprobe: %s\n", ops ? jerr.text : "backend not supported");
		json_decref(req);
		config_free(cfg);
		return 2;
	}
	char err[512];
	void *ctx = NULL;
	if (ops->open(cfg, NULL, &ctx, err, sizeof(err)) != 0) {
		json_t *o = json_pack("{s:s}", "open_error", err);
		json_dumpf(o, stdout, 0);
		json_decref(o);
		json_decref(req);
		config_free(cfg);
		return 1;
	}
	json_t *out = json_object();
	const char *op = jstr(req, "op");
	if (op && strcmp(op, "deliver") == 0) {
		json_t *items = json_object_get(req, "items");
		size_t n = json_array_size(items);
		struct feed_item *its = xcalloc(n ? n : 1, sizeof(*its));
		struct strlist(*tags)[2] = xcalloc(n ? n : 1, sizeof(*tags));
		struct feed_attachment **atts = xcalloc(n ? n : 1, sizeof(*atts));
		unsigned char ***datas = xcalloc(n ? n : 1, sizeof(*datas));
		struct feed_result *res = xcalloc(n ? n : 1, sizeof(*res));
		struct probe_uploads ups = {.items = its, .by_item = json_array()};
		pthread_mutex_init(&ups.mu, NULL);
		for (size_t i = 0; i < n; i++) {
			probe_item(json_array_get(items, i), &its[i], tags[i], &atts[i], &datas[i]);
			its[i].uploaded = probe_uploaded;
			its[i].uploaded_arg = &ups;
			json_array_append_new(ups.by_item, json_array());
		}
		ops->deliver(ctx, its, n, res);
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++) {
			json_array_append_new(
			    arr,
			    json_pack("{s:s, s:s?, s:I, s:s, s:O}", "status",
				      status_name(res[i].status), "remote_id", res[i].remote_id,
				      "retry_after", (json_int_t)res[i].retry_after, "error",
				      res[i].error, "uploaded", json_array_get(ups.by_item, i)));
			free(res[i].remote_id);
			for (size_t k = 0; k < its[i].n_attachments; k++)
				free(datas[i][k]);
			free(datas[i]);
			free(atts[i]);
			strlist_free(&tags[i][0]);
			strlist_free(&tags[i][1]);
		}
		json_object_set_new(out, "results", arr);
		json_decref(ups.by_item);
		pthread_mutex_destroy(&ups.mu);
		free(its);
		free(tags);
		free(atts);
		free(datas);
		free(res);
	} else if (op && strcmp(op, "reconcile") == 0) {
		struct feed_item it;
		struct strlist tags[2] = {{0}, {0}};
		struct feed_attachment *atts;
		unsigned char **datas;
		probe_item(json_object_get(req, "item"), &it, tags, &atts, &datas);
		char *rid = NULL;
		int f = ops->reconcile(ctx, &it, &rid);
		json_object_set_new(out, "found", json_integer(f));
		json_object_set_new(out, "remote_id", rid ? json_string(rid) : json_null());
		free(rid);
		for (size_t k = 0; k < it.n_attachments; k++)
			free(datas[k]);
		free(datas);
		free(atts);
		strlist_free(&tags[0]);
		strlist_free(&tags[1]);
	} else if (op && strcmp(op, "read") == 0) {
		struct feed_entry *e = NULL;
		size_t n = 0;
		/* a backend without a read API (the webhook) has nothing to read */
		int rc = !ops->read_group ? -1 : ops->read_group(ctx, jstr(req, "group"),
					 (time_t)json_integer_value(json_object_get(req, "since")),
					 &e, &n, err, sizeof(err));
		json_object_set_new(out, "rc", json_integer(rc));
		if (rc != 0)
			json_object_set_new(out, "error",
					    json_string(ops->read_group ? err : "no read API"));
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++) {
			json_t *files = json_array();
			for (size_t k = 0; k < e[i].n_files; k++)
				json_array_append_new(
				    files, json_pack("{s:s, s:I, s:s?}", "name", e[i].files[k].name,
						     "size", (json_int_t)e[i].files[k].size, "url",
						     e[i].files[k].url));
			json_array_append_new(
			    arr, json_pack("{s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:I, s:o}", "remote_id",
					   e[i].remote_id, "parent", e[i].parent_remote_id,
					   "author_name", e[i].author_name, "author_email",
					   e[i].author_email, "text", e[i].text, "url", e[i].url,
					   "created", (json_int_t)e[i].created, "files", files));
		}
		json_object_set_new(out, "entries", arr);
		feed_entries_free(e, n);
	}
	json_dumpf(out, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	json_decref(out);
	json_decref(req);
	ops->close(ctx);
	config_free(cfg);
	return 0;
}
