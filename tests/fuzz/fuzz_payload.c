/* fuzz_payload.c — the JSON text the outbox writes and reads without
 * jansson: an outbox payload read in one pass gives the fields jansson
 * reads from the same text (or both refuse it), and a string written by
 * json_put_str reads back through jansson as itself when it is valid
 * UTF-8.  The strings come from mail, so every byte may be hostile. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/outbox_internal.h"
#include "mailfeed/message.h"
#include "mailfeed/util.h"

static void same_str(const char *a, const char *b)
{
	if ((!a) != (!b) || (a && strcmp(a, b) != 0))
		abort();
}

static void same_list(const struct strlist *a, const struct strlist *b)
{
	if (a->n != b->n)
		abort();
	for (size_t i = 0; i < a->n; i++)
		same_str(a->v[i], b->v[i]);
}

static void check_reading(const char *text)
{
	struct outbox_loaded f = {0}, j = {0};
	int rf = outbox_payload_read(text, &f, 1), rj = outbox_payload_read(text, &j, 0);
	if (rf != rj)
		abort();
	if (rj == 0) {
		same_str(f.parent_remote_id, j.parent_remote_id);
		same_str(f.author_name, j.author_name);
		same_str(f.author_email, j.author_email);
		same_str(f.subject, j.subject);
		same_str(f.text, j.text);
		same_str(f.message_id, j.message_id);
		if (f.item.author_verified != j.item.author_verified || f.item.date != j.item.date)
			abort();
		same_list(&f.tags, &j.tags);
		same_list(&f.recipients, &j.recipients);
	}
	outbox_loaded_free(&f);
	outbox_loaded_free(&j);
}

static void check_writing(const char *s)
{
	struct buf b = {0};
	json_put_str(&b, s);
	buf_printf(&b, "%s", "");
	json_error_t e;
	json_t *v = json_loads(b.data, JSON_DECODE_ANY, &e);
	if (!v)
		abort(); /* always JSON, whatever the bytes */
	if (utf8_valid(s, strlen(s)) &&
	    (!json_is_string(v) || strcmp(json_string_value(v), s) != 0))
		abort();
	json_decref(v);
	buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = xstrndup((const char *)data, size); /* stops at a NUL, as a row's text */
	check_reading(text);
	check_writing(text);
	/* the same bytes as a value inside a payload of the gateway's shape */
	struct buf p = {0};
	buf_printf(&p, "{\"subject\":");
	json_put_str(&p, text);
	buf_printf(&p, ",\"text\":");
	json_put_str(&p, text);
	buf_printf(&p, ",\"hashtags\":[");
	json_put_str(&p, text);
	buf_printf(&p, "]}");
	check_reading(p.data);
	buf_free(&p);
	free(text);
	return 0;
}
