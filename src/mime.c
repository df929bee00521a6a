/* mime.c — one raw RFC 5322 message into a struct mf_message.
 *
 * libetpan splits the MIME tree and undoes transfer encodings; everything
 * about text is done here: charsets to UTF-8 (with the fallbacks written
 * into m->warnings, never silently), RFC 2047 words, RFC 2231 parameters
 * (absent from libetpan 1.9.4), format=flowed, the choice of the text part,
 * attachment naming, and the facts classification needs.  The top-level
 * headers are read by our own tolerant splitter, not libetpan's strict
 * grammar, so that junk in one header never loses the others.
 *
 * This code runs inside the sandboxed parse worker (worker.c). */
#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <libetpan/libetpan.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/facts.h"
#include "mailfeed/html.h"
#include "mailfeed/mime.h"
#include "mime_internal.h"

#define REFERENCES_MAX 200
#define INLINE_LOGO_MAX (20 * 1024)
/* More multipart headers than this means a hostile nest, not a mail. */
#define MULTIPART_MAX 1000
#define TEXT_MAX (8u * 1024 * 1024)

/* ---- the MIME tree ----------------------------------------------------- */

struct walk {
	struct mf_message *m;
	struct buf plain, html, forwards, warn;
	int have_plain, have_html;
	size_t max_att;
	struct strlist cids; /* Content-ID per attachment, "" when none */
	int att_dropped;
};

static void walk_part(struct walk *w, struct mailmime *mime, int depth);

/* Decoded bytes of a leaf, in *len.  *owned says whether they were
 * allocated (n + 1 bytes at least) or lie in the message itself. */
static char *leaf_data(struct mailmime *mime, size_t *len, int *owned)
{
	struct mailmime_data *d = mime->mm_data.mm_single;
	*len = 0;
	*owned = 0;
	if (!d || d->dt_type != MAILMIME_DATA_TEXT)
		return NULL;
	const char *p = d->dt_data.dt_text.dt_data;
	size_t n = d->dt_data.dt_text.dt_length;
	int enc = d->dt_encoding;
	if (enc == MAILMIME_MECHANISM_BASE64) {
		char *out = xmalloc(n / 4 * 3 + 4);
		*len = mime_base64_decode(p, n, (unsigned char *)out);
		*owned = 1;
		return out;
	}
	if (enc == MAILMIME_MECHANISM_QUOTED_PRINTABLE) {
		char *out = xmalloc(2 * n + 2);
		ssize_t got = mime_qp_decode(p, n, out);
		if (got >= 0) {
			*len = (size_t)got;
			*owned = 1;
			return out;
		}
		free(out);
		size_t idx = 0, outlen = 0;
		char *lib = NULL;
		if (mailmime_part_parse(p, n, &idx, enc, &lib, &outlen) == MAILIMF_NO_ERROR &&
		    lib) {
			out = xmalloc(outlen + 1);
			memcpy(out, lib, outlen);
			mailmime_decoded_part_free(lib);
			*len = outlen;
			*owned = 1;
			return out;
		}
	}
	*len = n;
	return (char *)p;
}

static void leaf_data_free(char *p, int owned)
{
	if (owned)
		free(p);
}

static size_t content_params(struct mailmime_content *ct, struct mime_param **pv)
{
	size_t n = 0;
	*pv = NULL;
	if (!ct || !ct->ct_parameters)
		return 0;
	*pv = xcalloc((size_t)clist_count(ct->ct_parameters) + 1, sizeof **pv);
	for (clistiter *it = clist_begin(ct->ct_parameters); it; it = clist_next(it)) {
		struct mailmime_parameter *p = clist_content(it);
		if (p && p->pa_name && p->pa_value) {
			(*pv)[n].name = p->pa_name;
			(*pv)[n].value = p->pa_value;
			n++;
		}
	}
	return n;
}

static size_t disposition_params(struct mailmime_disposition *dsp, struct mime_param **pv)
{
	size_t n = 0;
	*pv = NULL;
	if (!dsp || !dsp->dsp_parms)
		return 0;
	*pv = xcalloc((size_t)clist_count(dsp->dsp_parms) + 1, sizeof **pv);
	for (clistiter *it = clist_begin(dsp->dsp_parms); it; it = clist_next(it)) {
		struct mailmime_disposition_parm *p = clist_content(it);
		if (!p)
			continue;
		if (p->pa_type == MAILMIME_DISPOSITION_PARM_FILENAME && p->pa_data.pa_filename) {
			(*pv)[n].name = "filename";
			(*pv)[n].value = p->pa_data.pa_filename;
			n++;
		} else if (p->pa_type == MAILMIME_DISPOSITION_PARM_PARAMETER &&
			   p->pa_data.pa_parameter && p->pa_data.pa_parameter->pa_name &&
			   p->pa_data.pa_parameter->pa_value) {
			(*pv)[n].name = p->pa_data.pa_parameter->pa_name;
			(*pv)[n].value = p->pa_data.pa_parameter->pa_value;
			n++;
		}
	}
	return n;
}

static char *content_type_str(struct mailmime_content *ct)
{
	const char *type = "application", *sub = "octet-stream";
	if (ct && ct->ct_type) {
		if (ct->ct_type->tp_type == MAILMIME_TYPE_DISCRETE_TYPE &&
		    ct->ct_type->tp_data.tp_discrete_type) {
			static const char *names[] = {"",      "text",	"image",
						      "audio", "video", "application"};
			int t = ct->ct_type->tp_data.tp_discrete_type->dt_type;
			if (t >= MAILMIME_DISCRETE_TYPE_TEXT &&
			    t <= MAILMIME_DISCRETE_TYPE_APPLICATION)
				type = names[t];
			else if (ct->ct_type->tp_data.tp_discrete_type->dt_extension)
				type = ct->ct_type->tp_data.tp_discrete_type->dt_extension;
		} else if (ct->ct_type->tp_type == MAILMIME_TYPE_COMPOSITE_TYPE &&
			   ct->ct_type->tp_data.tp_composite_type) {
			int t = ct->ct_type->tp_data.tp_composite_type->ct_type;
			type = t == MAILMIME_COMPOSITE_TYPE_MESSAGE	? "message"
			       : t == MAILMIME_COMPOSITE_TYPE_MULTIPART ? "multipart"
			       : ct->ct_type->tp_data.tp_composite_type->ct_token
				   ? ct->ct_type->tp_data.tp_composite_type->ct_token
				   : "application";
		}
		if (ct->ct_subtype)
			sub = ct->ct_subtype;
	}
	char *s = xasprintf("%s/%s", type, sub);
	str_lower(s);
	for (char *c = s; *c; c++)
		if ((unsigned char)*c < 0x21 || *c == '"')
			*c = '_';
	return s;
}

static void add_attachment(struct walk *w, struct mailmime *mime, const char *ctype,
			   const char *fname, const char *cid, int is_inline)
{
	struct mf_message *m = w->m;
	if (m->n_attachments >= MIME_MAX_ATTACHMENTS) {
		if (!w->att_dropped)
			mime_warn(&w->warn, "more than %d attachments; the rest are not listed",
				  MIME_MAX_ATTACHMENTS);
		w->att_dropped = 1;
		return;
	}
	size_t len;
	int owned;
	char *data = leaf_data(mime, &len, &owned);
	m->attachments = xrealloc(m->attachments, (m->n_attachments + 1) * sizeof *m->attachments);
	struct mf_attachment *a = &m->attachments[m->n_attachments++];
	memset(a, 0, sizeof *a);
	a->content_type = xstrdup(ctype);
	a->filename = mime_safe_filename(fname);
	if (!a->filename)
		a->filename = xasprintf("attachment-%zu.%s", m->n_attachments, mime_ext_for(ctype));
	a->size = data ? len : 0;
	sha256_hex(data ? data : "", a->size, a->sha256);
	a->is_inline = is_inline;
	if (data && (w->max_att == 0 || len <= w->max_att)) {
		if (owned) {
			a->data = (unsigned char *)data;
			data = NULL;
		} else {
			a->data = xmalloc(len + 1);
			memcpy(a->data, data, len);
		}
	}
	leaf_data_free(data, owned);
	strlist_add(&w->cids, cid ? cid : "");
}

static void walk_leaf(struct walk *w, struct mailmime *mime)
{
	struct mailmime_single_fields sf;
	memset(&sf, 0, sizeof sf);
	mailmime_single_fields_init(&sf, mime->mm_mime_fields, mime->mm_content_type);
	char *ctype = content_type_str(mime->mm_content_type);
	struct mime_param *cpv, *dpv;
	size_t cn = content_params(mime->mm_content_type, &cpv);
	size_t dn = disposition_params(sf.fld_disposition, &dpv);
	char *fname = mime_param_decode(dpv, dn, "filename");
	if (!fname)
		fname = mime_param_decode(cpv, cn, "name");
	int attach_dsp =
	    sf.fld_disposition && sf.fld_disposition->dsp_type &&
	    sf.fld_disposition->dsp_type->dsp_type == MAILMIME_DISPOSITION_TYPE_ATTACHMENT;
	int inline_dsp = sf.fld_disposition && sf.fld_disposition->dsp_type &&
			 sf.fld_disposition->dsp_type->dsp_type == MAILMIME_DISPOSITION_TYPE_INLINE;
	int is_plain = !strcmp(ctype, "text/plain"), is_html = !strcmp(ctype, "text/html");
	if ((is_plain || is_html) && !attach_dsp && !(fname && *fname)) {
		size_t len;
		int owned;
		char *data = leaf_data(mime, &len, &owned);
		char *cs = mime_param_decode(cpv, cn, "charset");
		char *u = mime_to_utf8(data ? data : "", data ? len : 0, cs, &w->warn);
		leaf_data_free(data, owned);
		mime_crlf_to_lf(u);
		if (is_plain) {
			char *fmt = mime_param_decode(cpv, cn, "format");
			char *delsp = mime_param_decode(cpv, cn, "delsp");
			if (fmt && !strcasecmp(fmt, "flowed")) {
				char *j = mime_unflow(u, delsp && !strcasecmp(delsp, "yes"));
				free(u);
				u = j;
			}
			free(fmt);
			free(delsp);
			if (w->plain.len && w->plain.data[w->plain.len - 1] != '\n')
				buf_putc(&w->plain, '\n');
			if (w->plain.len + strlen(u) < TEXT_MAX)
				buf_puts(&w->plain, u);
			w->have_plain = 1;
		} else {
			if (w->html.len + strlen(u) < TEXT_MAX)
				buf_puts(&w->html, u);
			w->have_html = 1;
		}
		free(u);
		free(cs);
	} else {
		add_attachment(w, mime, ctype, fname, sf.fld_id, inline_dsp || sf.fld_id != NULL);
	}
	free(fname);
	free(cpv);
	free(dpv);
	free(ctype);
}

/* A message/rfc822 part: rendered after the new text as a block that the
 * cleaner keeps (no "> "), so forwarded content reaches the feed. */
static void walk_forward(struct walk *w, struct mailmime *mime, int depth)
{
	struct walk sub;
	memset(&sub, 0, sizeof sub);
	sub.m = w->m;
	sub.max_att = w->max_att;
	buf_init(&sub.plain);
	buf_init(&sub.html);
	buf_init(&sub.forwards);
	buf_init(&sub.warn);
	struct mime_headers h;
	memset(&h, 0, sizeof h);
	struct mailmime_data *body = mime->mm_body;
	if (body && body->dt_type == MAILMIME_DATA_TEXT)
		mime_headers_parse(body->dt_data.dt_text.dt_data, body->dt_data.dt_text.dt_length,
				   &h);
	if (mime->mm_data.mm_message.mm_msg_mime)
		walk_part(&sub, mime->mm_data.mm_message.mm_msg_mime, depth + 1);
	/* Attachments of the forwarded message were listed on the outer one. */
	for (size_t i = 0; i < sub.cids.n; i++)
		strlist_add(&w->cids, sub.cids.v[i]);
	strlist_free(&sub.cids);
	w->att_dropped |= sub.att_dropped;
	if (sub.warn.len)
		mime_warn(&w->warn, "%s", sub.warn.data);
	struct buf *f = &w->forwards;
	buf_puts(f, "\n---------- Forwarded message ---------\n");
	static const char *show[] = {"From", "Date", "Subject", "To"};
	for (size_t i = 0; i < sizeof show / sizeof show[0]; i++) {
		const char *v = mime_header_get(&h, show[i]);
		if (v) {
			char *d = mime_decode_header(v);
			buf_printf(f, "%s: %s\n", show[i], d);
			free(d);
		}
	}
	buf_putc(f, '\n');
	const char *plain = sub.plain.data ? sub.plain.data : "";
	int plain_blank = 1;
	for (const char *c = plain; *c; c++)
		if (!isspace((unsigned char)*c))
			plain_blank = 0;
	if (!plain_blank || !sub.have_html) {
		buf_puts(f, plain);
	} else {
		char *t = html_to_text(sub.html.data, sub.html.len);
		buf_puts(f, t);
		free(t);
	}
	if (f->len && f->data[f->len - 1] != '\n')
		buf_putc(f, '\n');
	if (sub.forwards.len)
		buf_puts(f, sub.forwards.data);
	mime_headers_free(&h);
	buf_free(&sub.plain);
	buf_free(&sub.html);
	buf_free(&sub.forwards);
	buf_free(&sub.warn);
}

static void walk_part(struct walk *w, struct mailmime *mime, int depth)
{
	if (!mime)
		return;
	if (depth > MIME_MAX_DEPTH) {
		mime_warn(&w->warn, "MIME nesting deeper than %d; the rest is not read",
			  MIME_MAX_DEPTH);
		return;
	}
	switch (mime->mm_type) {
	case MAILMIME_SINGLE:
		walk_leaf(w, mime);
		break;
	case MAILMIME_MULTIPLE:
		for (clistiter *it = mime->mm_data.mm_multipart.mm_mp_list
					 ? clist_begin(mime->mm_data.mm_multipart.mm_mp_list)
					 : NULL;
		     it; it = clist_next(it))
			walk_part(w, clist_content(it), depth + 1);
		break;
	case MAILMIME_MESSAGE:
		if (depth == 0)
			walk_part(w, mime->mm_data.mm_message.mm_msg_mime, depth + 1);
		else
			walk_forward(w, mime, depth);
		break;
	default:
		break;
	}
}

/* ---- signature images -------------------------------------------------- */

static const char *strcasestr_n(const char *hay, const char *needle)
{
	return hay ? strcasestr(hay, needle) : NULL;
}

/* Where the signature area of the HTML starts, or NULL. */
static const char *html_signature_start(const char *html)
{
	static const char *marks[] = {"signature", "-- <br", "--&nbsp;<br", ">-- <", ">--&nbsp;<"};
	const char *best = NULL;
	for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
		const char *p = strcasestr_n(html, marks[i]);
		if (i == 0) {
			/* only as an attribute value inside a tag */
			while (p) {
				const char *lt = p, *gt = p;
				while (lt > html && *lt != '<' && *lt != '>')
					lt--;
				while (*gt && *gt != '>' && *gt != '<')
					gt++;
				if (*lt == '<' && *gt == '>')
					break;
				p = strcasestr(p + 1, marks[i]);
			}
		}
		if (p && (!best || p < best))
			best = p;
	}
	return best;
}

/* image001.png (Outlook), Outlook-abc.png, anything named like a logo. */
static int logo_name(const char *name)
{
	if (!name)
		return 0;
	if (!strncasecmp(name, "image", 5)) {
		const char *p = name + 5;
		int digits = 0;
		while (isdigit((unsigned char)*p)) {
			p++;
			digits++;
		}
		if (digits && *p == '.')
			return 1;
	}
	return !strncasecmp(name, "outlook-", 8) || strcasestr(name, "logo") ||
	       strcasestr(name, "signature") || strcasestr(name, "banner");
}

/* Small inline images that are only part of a signature are not content:
 * those referenced from the HTML only inside the signature area, and those
 * named like generated logo files. */
static void drop_signature_images(struct walk *w, const char *html)
{
	struct mf_message *m = w->m;
	const char *sig = NULL;
	int sig_known = 0; /* found only when an image needs it */
	size_t j = 0;
	for (size_t i = 0; i < m->n_attachments; i++) {
		struct mf_attachment *a = &m->attachments[i];
		const char *cid = i < w->cids.n ? w->cids.v[i] : "";
		int drop = 0;
		if (a->is_inline && a->size < INLINE_LOGO_MAX &&
		    !strncmp(a->content_type, "image/", 6)) {
			int refs = 0, refs_in_sig = 0;
			if (*cid && html) {
				if (!sig_known) {
					sig = html_signature_start(html);
					sig_known = 1;
				}
				char *needle = xasprintf("cid:%s", cid);
				for (const char *p = strcasestr(html, needle); p;
				     p = strcasestr(p + 1, needle)) {
					refs++;
					if (sig && p > sig)
						refs_in_sig++;
				}
				free(needle);
			}
			drop = (refs && refs == refs_in_sig) || logo_name(a->filename);
		}
		if (drop) {
			free(a->filename);
			free(a->content_type);
			free(a->data);
			continue;
		}
		m->attachments[j++] = *a;
	}
	m->n_attachments = j;
}

/* ---- the message ------------------------------------------------------- */

static int is_blank(const char *s)
{
	for (; s && *s; s++)
		if (!isspace((unsigned char)*s))
			return 0;
	return 1;
}

/* Occurrences of "multipart/" in any case, found from each '/'. */
static size_t count_multipart(const char *raw, size_t len)
{
	static const char word[] = "multipart";
	const size_t n = sizeof word - 1;
	size_t count = 0;
	for (const char *p = raw + n, *end = raw + len;
	     p < end && (p = memchr(p, '/', (size_t)(end - p))) != NULL; p++)
		if (!strncasecmp(p - n, word, n))
			count++;
	return count;
}

static void fill_headers(struct mf_message *m, const struct mime_headers *h, struct buf *warn)
{
	const char *v;
	m->subject = mime_decode_header_warn(
	    mime_header_get(h, "Subject") ? mime_header_get(h, "Subject") : "", warn);
	if ((v = mime_header_get(h, "From"))) {
		struct strlist l = {0};
		char *name = NULL;
		mime_address_list(v, &l, 1, &name);
		if (l.n) {
			m->from_email = xstrdup(l.v[0]);
			m->from_name = name;
		} else {
			free(name);
			mime_mailbox_parse(v, &m->from_name, &m->from_email);
		}
		strlist_free(&l);
	}
	if ((v = mime_header_get(h, "Reply-To"))) {
		struct strlist l = {0};
		mime_address_list(v, &l, 0, NULL);
		if (l.n)
			m->reply_to = xstrdup(l.v[0]);
		strlist_free(&l);
	}
	m->message_id = mime_first_id(mime_header_get(h, "Message-ID"));
	m->in_reply_to = mime_first_id(mime_header_get(h, "In-Reply-To"));
	mime_id_list(mime_header_get(h, "References"), &m->references, REFERENCES_MAX);
	for (size_t i = 0; i < h->n; i++) {
		const char *n = h->v[i].name;
		if (!strcasecmp(n, "To"))
			mime_address_list(h->v[i].value, &m->to, 0, NULL);
		else if (!strcasecmp(n, "Cc"))
			mime_address_list(h->v[i].value, &m->cc, 0, NULL);
		else if (!strcasecmp(n, "Delivered-To") || !strcasecmp(n, "X-Original-To"))
			mime_address_list(h->v[i].value, &m->recipients_hint, 0, NULL);
	}
	m->date = mime_date_parse(mime_header_get(h, "Date"));
	if ((v = mime_header_get(h, "Authentication-Results")))
		m->auth_results = xstrdup(v);
}

struct mf_message *mime_parse_ex(const char *raw, size_t len, size_t max_attachment, char *err,
				 size_t errlen)
{
	if (count_multipart(raw, len) > MULTIPART_MAX) {
		snprintf(err, errlen, "unparseable: more than %d multipart parts", MULTIPART_MAX);
		return NULL;
	}
	size_t idx = 0;
	struct mailmime *mime = NULL;
	if (mailmime_parse(raw, len, &idx, &mime) != MAILIMF_NO_ERROR || !mime) {
		snprintf(err, errlen, "unparseable: not a MIME message");
		return NULL;
	}
	struct walk w;
	memset(&w, 0, sizeof w);
	w.m = message_new();
	w.max_att = max_attachment;
	buf_init(&w.plain);
	buf_init(&w.html);
	buf_init(&w.forwards);
	buf_init(&w.warn);
	struct mime_headers h;
	mime_headers_parse(raw, len, &h);
	struct mf_message *m = w.m;
	fill_headers(m, &h, &w.warn);
	walk_part(&w, mime, 0);
	mailmime_free(mime);

	struct buf text;
	buf_init(&text);
	if (w.have_plain && !is_blank(w.plain.data)) {
		m->part = xstrdup("text/plain");
		buf_puts(&text, w.plain.data);
	} else if (w.have_html) {
		m->part = xstrdup("text/html");
		char *t = html_to_text(w.html.data, w.html.len);
		buf_puts(&text, t);
		free(t);
	} else {
		m->part = xstrdup(w.have_plain ? "text/plain" : "none");
	}
	drop_signature_images(&w, w.have_html ? w.html.data : NULL);
	strlist_free(&w.cids);

	m->full_text = buf_steal(&text);
	if (w.forwards.len)
		m->forwarded = buf_steal(&w.forwards);
	/* the text a feed shows is convert_message's (convert.c) */
	m->text = xstrdup("");
	m->removed = xstrdup("");
	facts_gather(m, &h);
	if (w.warn.len)
		m->warnings = buf_steal(&w.warn);
	mime_headers_free(&h);
	buf_free(&w.plain);
	buf_free(&w.html);
	buf_free(&w.forwards);
	buf_free(&w.warn);
	return m;
}

struct mf_message *mime_parse(const char *raw, size_t len, char *err, size_t errlen)
{
	return mime_parse_ex(raw, len, 0, err, errlen);
}
