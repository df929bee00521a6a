/* token.c — reply and unsubscribe tokens: issuing, the reply address that
 * carries them, decoding and verification.  See token.h for the format.
 * Also the other way a reply is tied to what it answers: the Message-IDs
 * of the mail the gateway sent (sent_ids), recorded by the digest run and
 * looked up for In-Reply-To/References.  The only module that touches
 * reply_posts, reply_users and sent_ids.
 * Tokens arrive in untrusted mail: decoding is bounded and never trusts a
 * length, and the MAC is checked in constant time before anything a token
 * names is believed. */
#include <ctype.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/log.h"
#include "mailfeed/secret.h"
#include "mailfeed/token.h"
#include "mailfeed/util.h"

#define TOKEN_MAC_LEN 10
#define TOKEN_MAX_BYTES 40
#define TOKEN_MAX_CHARS 64

static const char b32_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

void token_info_clear(struct token_info *ti)
{
	free(ti->grp);
	free(ti->remote_id);
	free(ti->email);
	memset(ti, 0, sizeof *ti);
}

int token_secret_preload(struct mf_config *cfg, char *err, size_t errlen)
{
	unsigned char *data = NULL;
	size_t len = 0;
	if (!cfg->gateway.secret_file) {
		snprintf(err, errlen, "[gateway] secret_file is not set; reply tokens need it");
		return -1;
	}
	if (secret_read_raw(cfg->gateway.secret_file, &data, &len, err, errlen) < 0)
		return -1;
	if (!cfg->token_key)
		cfg->token_key = xcalloc(1, sizeof *cfg->token_key);
	if (cfg->token_key->data) {
		explicit_bzero(cfg->token_key->data, cfg->token_key->len);
		free(cfg->token_key->data);
	}
	cfg->token_key->data = data;
	cfg->token_key->len = len;
	return 0;
}

int token_secret_load(const struct mf_config *cfg, unsigned char **secret, size_t *len, char *err,
		      size_t errlen)
{
	if (cfg->token_key && cfg->token_key->data) {
		*secret = xmalloc(cfg->token_key->len ? cfg->token_key->len : 1);
		memcpy(*secret, cfg->token_key->data, cfg->token_key->len);
		*len = cfg->token_key->len;
		return 0;
	}
	if (!cfg->gateway.secret_file) {
		snprintf(err, errlen, "[gateway] secret_file is not set; reply tokens need it");
		return -1;
	}
	return secret_read_raw(cfg->gateway.secret_file, secret, len, err, errlen);
}

static size_t b32_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	unsigned int acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 5) {
			out[o++] = b32_alphabet[(acc >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits > 0)
		out[o++] = b32_alphabet[(acc << (5 - bits)) & 31];
	out[o] = 0;
	return o;
}

/* -1 on a character outside the alphabet or non-zero padding bits. */
static int b32_decode(const char *in, unsigned char *out, size_t outcap, size_t *outlen)
{
	unsigned int acc = 0;
	int bits = 0;
	size_t o = 0;
	for (const char *p = in; *p; p++) {
		int c = tolower((unsigned char)*p), v;
		if (c >= 'a' && c <= 'z')
			v = c - 'a';
		else if (c >= '2' && c <= '7')
			v = c - '2' + 26;
		else
			return -1;
		acc = ((acc << 5) | (unsigned int)v) & 0xfff;
		bits += 5;
		if (bits >= 8) {
			if (o >= outcap)
				return -1;
			out[o++] = (unsigned char)(acc >> (bits - 8));
			bits -= 8;
		}
	}
	if (bits >= 5 || (acc & ((1u << bits) - 1)) != 0)
		return -1;
	*outlen = o;
	return 0;
}

static size_t varint_put(unsigned char *p, uint64_t v)
{
	size_t n = 0;
	do {
		unsigned char b = v & 0x7f;
		v >>= 7;
		p[n++] = b | (v ? 0x80 : 0);
	} while (v);
	return n;
}

/* Reads at most maxbytes; -1 when truncated, too long or not minimal. */
static int varint_get(const unsigned char *p, size_t len, size_t *pos, size_t maxbytes, uint64_t *v)
{
	uint64_t r = 0;
	for (size_t i = 0; i < maxbytes; i++) {
		if (*pos >= len)
			return -1;
		unsigned char b = p[(*pos)++];
		r |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			if (b == 0 && i > 0)
				return -1;
			*v = r;
			return 0;
		}
	}
	return -1;
}

static void token_mac(const unsigned char *secret, size_t secretlen, enum token_kind kind,
		      const char *grp, const char *remote_id, const char *email, uint32_t day,
		      unsigned char mac[TOKEN_MAC_LEN])
{
	struct buf b;
	unsigned char full[32];
	buf_init(&b);
	buf_puts(&b, "mailfeed-token-v1");
	buf_putc(&b, 0);
	buf_putc(&b, (char)kind);
	buf_putc(&b, 0);
	buf_puts(&b, grp ? grp : "");
	buf_putc(&b, 0);
	buf_puts(&b, remote_id ? remote_id : "");
	buf_putc(&b, 0);
	buf_puts(&b, email);
	buf_putc(&b, 0);
	buf_printf(&b, "%u", (unsigned)day);
	hmac_sha256(secret, secretlen, b.data, b.len, full);
	memcpy(mac, full, TOKEN_MAC_LEN);
	buf_free(&b);
}

/* The id of the row select finds for key (and its second column in
 * *col1 when col1 is not NULL): > 0, 0 when none, -1 on error. */
static int64_t ref_lookup(struct db *db, const char *select, const char *key, char **col1)
{
	struct db_stmt *s = db_prepare(db, select);
	if (!s)
		return -1;
	db_bind_text(s, 1, key, -1);
	int64_t id = 0;
	int rc = db_step(s);
	if (rc == DB_ROW) {
		id = db_column_int64(s, 0);
		if (col1 && db_column_text(s, 1))
			*col1 = xstrdup(db_column_text(s, 1));
	} else if (rc != DB_DONE) {
		id = -1;
	}
	db_finalize(s);
	return id;
}

/* The id of a reference row (a post, a user), made when missing: looked up
 * first, since nearly every token names one already known (a digest
 * issues dozens for the same reader), then inserted (a racing insert of
 * another instance is fine: ON CONFLICT) and looked up again. */
static int64_t ref_id(struct store *st, const char *insert, const char *select, const char *a,
		      const char *b, char **col1)
{
	struct db *db = store_db(st);
	const char *key = b ? b : a;
	int64_t id = ref_lookup(db, select, key, col1);
	if (id != 0)
		return id;
	struct db_stmt *s = db_prepare(db, insert);
	if (!s)
		return -1;
	db_bind_text(s, 1, a, -1);
	if (b)
		db_bind_text(s, 2, b, -1);
	int rc = db_step(s);
	db_finalize(s);
	if (rc != DB_DONE)
		return -1;
	return ref_lookup(db, select, key, col1);
}

char *token_issue(struct store *st, const unsigned char *secret, size_t secretlen,
		  enum token_kind kind, const char *grp, const char *remote_id, const char *email,
		  time_t expires)
{
	unsigned char raw[TOKEN_MAX_BYTES];
	char out[TOKEN_MAX_CHARS + 8];
	int64_t post = 0, user;
	char *lemail = xstrdup(email);
	char *stored_grp = NULL;
	size_t n = 0;

	str_lower(lemail);
	if (kind == TOKEN_REPLY) {
		if (!grp || !remote_id)
			goto fail;
		/* The MAC covers the group the post was first recorded with. */
		post = ref_id(st,
			      "INSERT INTO reply_posts(grp, remote_id) VALUES(?,?)"
			      " ON CONFLICT DO NOTHING",
			      "SELECT id, grp FROM reply_posts WHERE remote_id=?", grp, remote_id,
			      &stored_grp);
		if (post <= 0 || !stored_grp)
			goto fail;
	}
	user = ref_id(st, "INSERT INTO reply_users(email) VALUES(?) ON CONFLICT DO NOTHING",
		      "SELECT id FROM reply_users WHERE email=?", lemail, NULL, NULL);
	if (user <= 0)
		goto fail;

	uint32_t day = (uint32_t)(expires / 86400);
	raw[n++] = (unsigned char)kind;
	n += varint_put(raw + n, (uint64_t)post);
	n += varint_put(raw + n, (uint64_t)user);
	n += varint_put(raw + n, day);
	token_mac(secret, secretlen, kind, stored_grp, kind == TOKEN_REPLY ? remote_id : NULL,
		  lemail, day, raw + n);
	n += TOKEN_MAC_LEN;
	b32_encode(raw, n, out);
	free(lemail);
	free(stored_grp);
	return xstrdup(out);
fail:
	log_error("token.error error=%s", LOG_Q(store_errmsg(st)));
	free(lemail);
	free(stored_grp);
	return NULL;
}

/* Splits reply_address into local and domain; 0 or -1. */
static int reply_parts(const struct mf_config *cfg, const char **local, size_t *llen,
		       const char **domain)
{
	const char *ra = cfg->gateway.reply_address;
	const char *at = ra ? strrchr(ra, '@') : NULL;
	if (!at || at == ra || !at[1])
		return -1;
	*local = ra;
	*llen = (size_t)(at - ra);
	*domain = at + 1;
	return 0;
}

char *token_address(const struct mf_config *cfg, const char *token)
{
	const char *local, *domain;
	size_t llen;
	if (reply_parts(cfg, &local, &llen, &domain) < 0)
		return NULL;
	if (llen + 1 + strlen(token) > TOKEN_LOCAL_MAX)
		return NULL;
	return xasprintf("%.*s+%s@%s", (int)llen, local, token, domain);
}

int token_from_address(const struct mf_config *cfg, const char *addr, char *out, size_t outlen)
{
	const char *local, *domain;
	size_t llen;
	if (!addr || reply_parts(cfg, &local, &llen, &domain) < 0)
		return 0;
	while (*addr == '<' || *addr == ' ')
		addr++;
	if (strncasecmp(addr, local, llen) != 0 || addr[llen] != '+')
		return 0;
	const char *tok = addr + llen + 1;
	const char *at = strchr(tok, '@');
	if (!at || at == tok)
		return 0;
	size_t tlen = (size_t)(at - tok);
	size_t dlen = strlen(domain);
	if (strncasecmp(at + 1, domain, dlen) != 0 || (at[1 + dlen] && at[1 + dlen] != '>'))
		return 0;
	if (tlen >= outlen || tlen > TOKEN_MAX_CHARS)
		return 0;
	memcpy(out, tok, tlen);
	out[tlen] = 0;
	return 1;
}

int token_decode(const char *token, struct token_raw *out)
{
	unsigned char raw[TOKEN_MAX_BYTES];
	size_t n, pos = 1;
	uint64_t post, user, day;

	if (!token || strlen(token) > TOKEN_MAX_CHARS)
		return -1;
	if (b32_decode(token, raw, sizeof raw, &n) < 0 || n < 1 + 3 + TOKEN_MAC_LEN)
		return -1;
	if (raw[0] != TOKEN_REPLY && raw[0] != TOKEN_UNSUBSCRIBE)
		return -1;
	if (varint_get(raw, n, &pos, 9, &post) < 0 || varint_get(raw, n, &pos, 9, &user) < 0 ||
	    varint_get(raw, n, &pos, 5, &day) < 0)
		return -1;
	if (n - pos != TOKEN_MAC_LEN || day > UINT32_MAX || post > INT64_MAX || user > INT64_MAX ||
	    user == 0)
		return -1;
	if ((raw[0] == TOKEN_REPLY) != (post != 0))
		return -1;
	out->kind = (enum token_kind)raw[0];
	out->post = (int64_t)post;
	out->user = (int64_t)user;
	out->day = (uint32_t)day;
	memcpy(out->mac, raw + pos, TOKEN_MAC_LEN);
	return 0;
}

static char *column_dup(struct db_stmt *s, int i)
{
	const char *t = db_column_text(s, i);
	return t ? xstrdup(t) : NULL;
}

enum token_status token_verify(struct store *st, const unsigned char *secret, size_t secretlen,
			       const char *token, time_t now, struct token_info *info)
{
	struct token_raw r;
	struct token_info ti = {0};
	struct db_stmt *s;
	unsigned char mac[TOKEN_MAC_LEN];

	memset(info, 0, sizeof *info);
	if (token_decode(token, &r) < 0)
		return TOKEN_FORGED;
	if (!(s = db_prepare(store_db(st), "SELECT email FROM reply_users WHERE id=?")))
		return TOKEN_FORGED;
	db_bind_int64(s, 1, r.user);
	if (db_step(s) == DB_ROW)
		ti.email = column_dup(s, 0);
	db_finalize(s);
	if (r.kind == TOKEN_REPLY &&
	    (s = db_prepare(store_db(st), "SELECT grp, remote_id FROM reply_posts WHERE id=?"))) {
		db_bind_int64(s, 1, r.post);
		if (db_step(s) == DB_ROW) {
			ti.grp = column_dup(s, 0);
			ti.remote_id = column_dup(s, 1);
		}
		db_finalize(s);
	}
	if (!ti.email || (r.kind == TOKEN_REPLY && (!ti.grp || !ti.remote_id))) {
		token_info_clear(&ti);
		return TOKEN_FORGED;
	}
	token_mac(secret, secretlen, r.kind, ti.grp, ti.remote_id, ti.email, r.day, mac);
	if (CRYPTO_memcmp(mac, r.mac, TOKEN_MAC_LEN) != 0) {
		token_info_clear(&ti);
		return TOKEN_FORGED;
	}
	ti.kind = r.kind;
	ti.expires = (time_t)r.day * 86400 + 86399;
	*info = ti;
	return now > info->expires ? TOKEN_EXPIRED : TOKEN_OK;
}

/* ------------------------------------------------------------------ */
/* Message-IDs of the mail the gateway sent                            */

int token_sent_id_record(struct store *st, const char *message_id, const char *grp,
			 const char *remote_id, const char *email, time_t sent)
{
	static const char sql[] = "INSERT INTO sent_ids(message_id, grp, remote_id, email, created)"
				  " VALUES(?1,?2,?3,?4,?5) ON CONFLICT DO NOTHING";
	struct db_stmt *s = store_stmt(st, sql);
	const char *v[4] = {message_id, grp, remote_id, email};
	int rc;
	if (!s)
		return -1;
	for (int i = 0; i < 4; i++)
		if (v[i])
			db_bind_text(s, i + 1, v[i], -1);
	db_bind_int64(s, 5, (int64_t)sent);
	rc = db_step(s) == DB_DONE ? 0 : -1;
	store_stmt_done(st, s);
	return rc;
}

int token_sent_id_find(struct store *st, const char *message_id, struct token_info *ti,
		       time_t *sent)
{
	struct db_stmt *s;
	int found = 0;
	if (!message_id ||
	    !(s = db_prepare(
		  store_db(st),
		  "SELECT grp, remote_id, email, created FROM sent_ids WHERE message_id=?")))
		return 0;
	db_bind_text(s, 1, message_id, -1);
	if (db_step(s) == DB_ROW && db_column_text(s, 2)) {
		const char *g = db_column_text(s, 0);
		const char *r = db_column_text(s, 1);
		ti->kind = g && r ? TOKEN_REPLY : TOKEN_UNSUBSCRIBE;
		ti->grp = g && r ? xstrdup(g) : NULL;
		ti->remote_id = g && r ? xstrdup(r) : NULL;
		ti->email = xstrdup(db_column_text(s, 2));
		*sent = (time_t)db_column_int64(s, 3);
		found = 1;
	}
	db_finalize(s);
	return found;
}

int token_prune(struct store *st, time_t cutoff)
{
	return store_prune_rows(st, "DELETE FROM sent_ids WHERE created < ?1", cutoff);
}
