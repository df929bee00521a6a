/* message.c — struct mf_message: allocation and its JSON form.
 *
 * The JSON form is how a parsed message crosses from the sandboxed parse
 * worker to the daemon, and what `mailfeed inspect --json` prints, so both
 * directions live here next to each other and must stay symmetric. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mailfeed/message.h"

struct mf_message *message_new(void) { return xcalloc(1, sizeof(struct mf_message)); }

void message_free(struct mf_message *m)
{
	if (!m)
		return;
	free(m->subject);
	free(m->subject_norm);
	free(m->from_name);
	free(m->from_email);
	free(m->reply_to);
	free(m->message_id);
	free(m->in_reply_to);
	strlist_free(&m->references);
	strlist_free(&m->to);
	strlist_free(&m->cc);
	strlist_free(&m->recipients_hint);
	free(m->part);
	free(m->full_text);
	free(m->text);
	free(m->removed);
	strlist_free(&m->hashtags);
	free(m->auto_reason);
	free(m->bounce_reason);
	free(m->list_id);
	free(m->auth_results);
	free(m->warnings);
	for (size_t i = 0; i < m->n_attachments; i++) {
		free(m->attachments[i].filename);
		free(m->attachments[i].content_type);
		free(m->attachments[i].data);
	}
	free(m->attachments);
	free(m);
}

/* A JSON string even when s is not valid UTF-8 (bytes above 0x7f become
 * '?'), so that one bad field never drops a key from the object. */
static json_t *jstr(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	char *copy = xstrdup(s);
	for (char *c = copy; *c; c++)
		if ((unsigned char)*c > 0x7f)
			*c = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

static json_t *str_or_null(const char *s) { return s ? jstr(s) : json_null(); }

static json_t *list_json(const struct strlist *l)
{
	json_t *a = json_array();
	for (size_t i = 0; i < l->n; i++)
		json_array_append_new(a, jstr(l->v[i]));
	return a;
}

static json_t *attachment_json(const struct mf_attachment *a, int with_data)
{
	json_t *o = json_object();
	json_object_set_new(o, "filename", str_or_null(a->filename));
	json_object_set_new(o, "content_type", str_or_null(a->content_type));
	json_object_set_new(o, "size", json_integer((json_int_t)a->size));
	json_object_set_new(o, "sha256", json_string(a->sha256));
	json_object_set_new(o, "inline", json_boolean(a->is_inline));
	if (with_data && a->data) {
		size_t enc = 4 * ((a->size + 2) / 3) + 1;
		char *b64 = xmalloc(enc);
		EVP_EncodeBlock((unsigned char *)b64, a->data, (int)a->size);
		json_object_set_new(o, "data", json_string(b64));
		free(b64);
	}
	return o;
}

json_t *message_to_json(const struct mf_message *m, int with_data)
{
	json_t *o = json_object();
	char when[32];
	json_object_set_new(o, "subject", str_or_null(m->subject));
	json_object_set_new(o, "subject_norm", str_or_null(m->subject_norm));
	json_object_set_new(o, "from",
			    json_pack("{s:o,s:o}", "name", str_or_null(m->from_name), "email",
				      str_or_null(m->from_email)));
	json_object_set_new(o, "reply_to", str_or_null(m->reply_to));
	json_object_set_new(o, "message_id", str_or_null(m->message_id));
	json_object_set_new(o, "in_reply_to", str_or_null(m->in_reply_to));
	json_object_set_new(o, "references", list_json(&m->references));
	json_object_set_new(o, "to", list_json(&m->to));
	json_object_set_new(o, "cc", list_json(&m->cc));
	json_object_set_new(o, "recipients_hint", list_json(&m->recipients_hint));
	json_object_set_new(
	    o, "date", m->date ? json_string(time_iso(m->date, when, sizeof when)) : json_null());
	json_object_set_new(o, "part", str_or_null(m->part));
	json_object_set_new(o, "full_text", jstr(m->full_text ? m->full_text : ""));
	json_object_set_new(o, "text", jstr(m->text ? m->text : ""));
	json_object_set_new(o, "removed", jstr(m->removed ? m->removed : ""));
	json_object_set_new(o, "hashtags", list_json(&m->hashtags));
	json_object_set_new(o, "auto_reason", str_or_null(m->auto_reason));
	json_object_set_new(o, "bounce_reason", str_or_null(m->bounce_reason));
	json_object_set_new(o, "bulk", json_boolean(m->bulk));
	json_object_set_new(o, "list_id", str_or_null(m->list_id));
	json_object_set_new(o, "own", json_boolean(m->own));
	json_object_set_new(o, "auth_results", str_or_null(m->auth_results));
	json_object_set_new(o, "warnings", str_or_null(m->warnings));
	json_t *atts = json_array();
	for (size_t i = 0; i < m->n_attachments; i++)
		json_array_append_new(atts, attachment_json(&m->attachments[i], with_data));
	json_object_set_new(o, "attachments", atts);
	return o;
}

static char *get_str(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_string(v) ? xstrdup(json_string_value(v)) : NULL;
}

static void get_list(const json_t *o, const char *key, struct strlist *l)
{
	const json_t *a = json_object_get(o, key);
	size_t i;
	const json_t *v;
	if (!json_is_array(a))
		return;
	json_array_foreach(a, i, v)
	{
		if (json_is_string(v))
			strlist_add(l, json_string_value(v));
	}
}

static time_t parse_iso(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
	return end && !*end ? timegm(&tm) : 0;
}

static int get_attachment(const json_t *o, struct mf_attachment *a)
{
	if (!json_is_object(o))
		return -1;
	a->filename = get_str(o, "filename");
	a->content_type = get_str(o, "content_type");
	a->size = (size_t)json_integer_value(json_object_get(o, "size"));
	const char *sha = json_string_value(json_object_get(o, "sha256"));
	if (sha && strlen(sha) == 64)
		memcpy(a->sha256, sha, 65);
	a->is_inline = json_is_true(json_object_get(o, "inline"));
	const char *b64 = json_string_value(json_object_get(o, "data"));
	if (b64) {
		size_t n = strlen(b64);
		if (n % 4)
			return -1;
		a->data = xmalloc(n / 4 * 3 + 1);
		int got = EVP_DecodeBlock(a->data, (const unsigned char *)b64, (int)n);
		/* EVP_DecodeBlock counts padding bytes too; size says the truth. */
		if (got < 0 || (size_t)got < a->size)
			return -1;
	}
	return 0;
}

struct mf_message *message_from_json(const json_t *obj)
{
	if (!json_is_object(obj) || !json_is_object(json_object_get(obj, "from")))
		return NULL;
	struct mf_message *m = message_new();
	const json_t *from = json_object_get(obj, "from");
	m->subject = get_str(obj, "subject");
	m->subject_norm = get_str(obj, "subject_norm");
	m->from_name = get_str(from, "name");
	m->from_email = get_str(from, "email");
	m->reply_to = get_str(obj, "reply_to");
	m->message_id = get_str(obj, "message_id");
	m->in_reply_to = get_str(obj, "in_reply_to");
	get_list(obj, "references", &m->references);
	get_list(obj, "to", &m->to);
	get_list(obj, "cc", &m->cc);
	get_list(obj, "recipients_hint", &m->recipients_hint);
	m->date = parse_iso(json_string_value(json_object_get(obj, "date")));
	m->part = get_str(obj, "part");
	m->full_text = get_str(obj, "full_text");
	m->text = get_str(obj, "text");
	m->removed = get_str(obj, "removed");
	get_list(obj, "hashtags", &m->hashtags);
	m->auto_reason = get_str(obj, "auto_reason");
	m->bounce_reason = get_str(obj, "bounce_reason");
	m->bulk = json_is_true(json_object_get(obj, "bulk"));
	m->list_id = get_str(obj, "list_id");
	m->own = json_is_true(json_object_get(obj, "own"));
	m->auth_results = get_str(obj, "auth_results");
	m->warnings = get_str(obj, "warnings");
	const json_t *atts = json_object_get(obj, "attachments");
	size_t n = json_is_array(atts) ? json_array_size(atts) : 0;
	if (n) {
		m->attachments = xcalloc(n, sizeof *m->attachments);
		for (size_t i = 0; i < n; i++) {
			m->n_attachments++;
			if (get_attachment(json_array_get(atts, i), &m->attachments[i]) < 0) {
				message_free(m);
				return NULL;
			}
		}
	}
	return m;
}
