/* feed_webhook.c — the generic webhook backend (README, "Webhook"): each post or
 * comment is one signed JSON POST to [feed] url.
 *
 *   X-Mailfeed-Delivery:  the item's idempotency key, the same on every retry
 *                         (the receiver deduplicates on it, so reconcile has
 *                         nothing to ask and answers "not there")
 *   X-Mailfeed-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>
 *   X-Mailfeed-Timestamp: the Unix time of this attempt
 *   X-Mailfeed-Signature-V2: sha256=<hex HMAC-SHA256 of
 *                         "TIMESTAMP.DELIVERY.BODY" with the secret>
 *
 * The first signature is the original one and stays for receivers that check only
 * it; it cannot tell a replayed request from a new one.  The second binds
 * the time and the delivery key, so a receiver that accepts it only within
 * a few minutes of its timestamp (README: 5) and deduplicates on the
 * delivery key cannot be fed an old request again, nor one item's body
 * under another item's key.
 *
 * Any 2xx is success, a JSON answer {"id": ...} names the receiver's id (else
 * the key is the id); 408/425/429/5xx and network errors are retried
 * (Retry-After honoured); other 4xx are permanent, with the answer's text.
 * A webhook cannot be read back (no read_group), so digests are built from
 * what mailfeed itself delivered to the group (outbox_read_group). */
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/feed.h"
#include "mailfeed/feed_http.h"
#include "mailfeed/http.h"
#include "mailfeed/log.h"
#include "mailfeed/message.h"
#include "mailfeed/secret.h"
#include "mailfeed/util.h"

#define WEBHOOK_MAX_ID 256
#define WEBHOOK_ERROR_TEXT 300

struct webhook_ctx {
	struct store *st;
	struct http_client *http;
	char *url;
	unsigned char *secret;
	size_t secret_len;
	long long max_file_size;
	int max_files;
};

static int webhook_open(const struct mf_config *cfg, struct store *st, void **ctx, char *err,
			size_t errlen)
{
	const struct mf_feed *f = &cfg->feed;
	char e[256];
	if (!f->url || !f->secret_file) {
		snprintf(err, errlen, "[feed] backend = webhook needs url and secret_file");
		return -1;
	}
	struct webhook_ctx *c = xcalloc(1, sizeof *c);
	if (secret_read_raw(f->secret_file, &c->secret, &c->secret_len, e, sizeof e) < 0) {
		snprintf(err, errlen, "webhook secret: %s", e);
		free(c);
		return -1;
	}
	struct http_options o = {.ca_file = f->ca_file,
				 .tls_verify = f->tls_verify,
				 .connect_timeout = f->connect_timeout,
				 .timeout = f->timeout,
				 .max_concurrency = f->concurrency};
	c->http = http_client_new(&o, err, errlen);
	if (!c->http) {
		free(c->secret);
		free(c);
		return -1;
	}
	c->st = st;
	c->url = xstrdup(f->url);
	c->max_file_size = f->max_file_size;
	c->max_files = f->max_files;
	*ctx = c;
	return 0;
}

static void webhook_close(void *ctx)
{
	struct webhook_ctx *c = ctx;
	if (!c)
		return;
	http_client_free(c->http);
	if (c->secret)
		memset(c->secret, 0, c->secret_len);
	free(c->secret);
	free(c->url);
	free(c);
}

static json_t *base64_of(const unsigned char *data, size_t n)
{
	if (n > (size_t)INT32_MAX / 2)
		return json_null();
	char *out = base64_encode(data, n);
	json_t *j = json_string(out);
	free(out);
	return j;
}

/* The JSON object for one item (the body README shows).  Files over max_file_size, or beyond
 * max_files, are listed with "data": null. */
static char *webhook_body(const struct webhook_ctx *c, const struct feed_item *it)
{
	json_t *o = json_object(), *tags = json_array(), *files = json_array();
	char when[32];
	int with_data = 0;
	json_object_set_new(o, "type", json_string(it->kind == FEED_POST ? "post" : "comment"));
	json_object_set_new(o, "key", json_string(it->key));
	json_object_set_new(o, "group", json_string(it->group));
	json_object_set_new(o, "parent",
			    it->kind == FEED_COMMENT ? json_str_or_null(it->parent_remote_id)
						     : json_null());
	json_object_set_new(o, "author",
			    json_pack("{s:o, s:o, s:b}", "name", json_str_or_null(it->author_name),
				      "email", json_str_or_null(it->author_email), "verified",
				      it->author_verified));
	json_object_set_new(o, "subject", json_string(it->subject ? it->subject : ""));
	json_object_set_new(o, "text", json_string(it->text ? it->text : ""));
	for (size_t i = 0; it->hashtags && i < it->hashtags->n; i++)
		json_array_append_new(tags, json_string(it->hashtags->v[i]));
	json_object_set_new(o, "hashtags", tags);
	json_object_set_new(o, "message_id", json_str_or_null(it->message_id));
	json_object_set_new(
	    o, "date", it->date ? json_string(time_iso(it->date, when, sizeof when)) : json_null());
	for (size_t i = 0; i < it->n_attachments; i++) {
		const struct feed_attachment *a = &it->attachments[i];
		json_t *f = json_pack(
		    "{s:s, s:s, s:I, s:o}", "filename", a->filename ? a->filename : "attachment",
		    "content_type", a->content_type ? a->content_type : "application/octet-stream",
		    "size", (json_int_t)a->size, "sha256", json_str_or_null(a->sha256));
		int ok = a->data &&
			 (c->max_file_size <= 0 || (long long)a->size <= c->max_file_size) &&
			 (c->max_files <= 0 || with_data < c->max_files);
		json_object_set_new(f, "data", ok ? base64_of(a->data, a->size) : json_null());
		with_data += ok;
		json_array_append_new(files, f);
	}
	json_object_set_new(o, "attachments", files);
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* Copies the start of an answer into out, one line, printable only. */
static void excerpt(const char *s, char *out, size_t outlen)
{
	size_t j = 0;
	for (size_t i = 0; s && s[i] && j + 1 < outlen && i < WEBHOOK_ERROR_TEXT; i++) {
		unsigned char ch = (unsigned char)s[i];
		out[j++] = ch < 0x20 || ch == 0x7F ? ' ' : (char)ch;
	}
	out[j] = '\0';
}

/* The receiver's id from a 2xx answer, or NULL. */
static char *answer_id(const struct http_request *r)
{
	json_t *j = json_loadb(r->response.data, r->response.len, 0, NULL);
	json_t *id = json_object_get(j, "id");
	char *out = NULL;
	if (json_is_string(id) && json_string_length(id) > 0 &&
	    json_string_length(id) <= WEBHOOK_MAX_ID) {
		out = xstrdup(json_string_value(id));
		for (char *p = out; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7F)
				*p = '_';
	} else if (json_is_integer(id)) {
		out = xasprintf("%lld", (long long)json_integer_value(id));
	}
	json_decref(j);
	return out;
}

static void webhook_result(const struct feed_item *it, const struct http_request *r,
			   struct feed_result *res)
{
	char text[WEBHOOK_ERROR_TEXT + 1];
	memset(res, 0, sizeof *res);
	res->status = feed_http_status(r->status, r->curl_failed);
	if (r->curl_failed) {
		snprintf(res->error, sizeof res->error, "webhook unreachable: %s", r->error);
		return;
	}
	if (res->status == FEED_OK) {
		res->remote_id = answer_id(r);
		if (!res->remote_id)
			res->remote_id = xstrdup(it->key);
		return;
	}
	excerpt(r->response.data, text, sizeof text);
	snprintf(res->error, sizeof res->error, "webhook answered HTTP %ld: %s", r->status, text);
	if (res->status == FEED_RETRY)
		res->retry_after = http_retry_after(r);
}

static void webhook_deliver(void *ctx, const struct feed_item *items, size_t n,
			    struct feed_result *results)
{
	struct webhook_ctx *c = ctx;
	struct http_request *reqs = xcalloc(n ? n : 1, sizeof *reqs);
	struct http_request **ptrs = xcalloc(n ? n : 1, sizeof *ptrs);
	for (size_t i = 0; i < n; i++) {
		char *body = webhook_body(c, &items[i]);
		unsigned char mac[32];
		char hex[65], sig[80], sig2[80], ts[24];
		hmac_sha256(c->secret, c->secret_len, body, strlen(body), mac);
		hex_encode(mac, sizeof mac, hex);
		snprintf(sig, sizeof sig, "sha256=%s", hex);
		snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
		char *signed_text = xasprintf("%s.%s.%s", ts, items[i].key, body);
		hmac_sha256(c->secret, c->secret_len, signed_text, strlen(signed_text), mac);
		free(signed_text);
		hex_encode(mac, sizeof mac, hex);
		snprintf(sig2, sizeof sig2, "sha256=%s", hex);
		http_request_init(&reqs[i], "POST", c->url);
		http_request_json(&reqs[i], body);
		http_request_header(&reqs[i], "X-Mailfeed-Delivery", items[i].key);
		http_request_header(&reqs[i], "X-Mailfeed-Signature", sig);
		http_request_header(&reqs[i], "X-Mailfeed-Timestamp", ts);
		http_request_header(&reqs[i], "X-Mailfeed-Signature-V2", sig2);
		ptrs[i] = &reqs[i];
	}
	http_perform(c->http, ptrs, n);
	for (size_t i = 0; i < n; i++) {
		webhook_result(&items[i], &reqs[i], &results[i]);
		log_debug("webhook.answer key=%s status=%ld elapsed=%.3f", items[i].key,
			  reqs[i].status, reqs[i].elapsed);
		http_request_clear(&reqs[i]);
	}
	free(ptrs);
	free(reqs);
}

static int webhook_reconcile(void *ctx, const struct feed_item *item, char **remote_id)
{
	return 0;
}

const struct feed_backend_ops feed_webhook_ops = {
    .name = "webhook",
    .open = webhook_open,
    .deliver = webhook_deliver,
    .reconcile = webhook_reconcile,
    .close = webhook_close,
};
