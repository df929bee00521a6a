/* token.h — signed reply and unsubscribe tokens carried in the local part
 * of an address: LOCAL+TOKEN@domain of gateway.reply_address.
 *
 * A token holds a kind, the small integer id of a post (table reply_posts),
 * the id of the user it was issued to (table reply_users), an expiry day and
 * an 80-bit truncated HMAC-SHA256 over (kind, post group and remote id, the
 * user's lower-cased email, expiry day) keyed with the gateway secret.  It is
 * written in lower-case base32 without padding, so it survives MTAs that
 * fold the case of local parts. */
#ifndef MAILFEED_TOKEN_H
#define MAILFEED_TOKEN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mailfeed/config.h"
#include "mailfeed/store.h"

/* Longest local part RFC 5321 allows; LOCAL+TOKEN never exceeds it. */
#define TOKEN_LOCAL_MAX 64

enum token_kind {
	TOKEN_REPLY = 'r',	 /* reply to one post */
	TOKEN_UNSUBSCRIBE = 'u', /* List-Unsubscribe of one subscriber */
};

enum token_status { TOKEN_OK, TOKEN_FORGED, TOKEN_EXPIRED };

/* The fields encoded in a token, as decoded (not yet verified). */
struct token_raw {
	enum token_kind kind;
	int64_t post; /* reply_posts.id, 0 for unsubscribe */
	int64_t user; /* reply_users.id */
	uint32_t day; /* last valid day, days since 1970-01-01 UTC */
	unsigned char mac[10];
};

/* What a verified token stands for.  Strings owned; token_info_clear. */
struct token_info {
	enum token_kind kind;
	char *grp;	 /* NULL for unsubscribe */
	char *remote_id; /* NULL for unsubscribe */
	char *email;	 /* lower-cased */
	time_t expires;
};
void token_info_clear(struct token_info *ti);

/* The gateway secret (gateway.secret_file): a copy of the one kept with
 * the configuration when token_secret_preload read it, else read from
 * disk now.  *secret owned by the caller (wipe, free()).  0, or -1 with
 * err. */
/* Reads the gateway secret once and keeps it with cfg (cfg->token_key,
 * wiped by config_free), for a daemon that uses it per message: called
 * when a configuration is loaded or reloaded.  0, or -1 with err (then
 * token_secret_load reads the file each time, as without preloading). */
int token_secret_preload(struct mf_config *cfg, char *err, size_t errlen);
int token_secret_load(const struct mf_config *cfg, unsigned char **secret, size_t *len, char *err,
		      size_t errlen);

/* Issues a token string (owned) for a post (kind TOKEN_REPLY; grp and
 * remote_id required) or for a subscriber (TOKEN_UNSUBSCRIBE; grp and
 * remote_id NULL) valid until the end of the UTC day of expires.  Records
 * the post and user ids in the store (own short transaction when none is
 * open).  NULL on a store error. */
char *token_issue(struct store *st, const unsigned char *secret, size_t secretlen,
		  enum token_kind kind, const char *grp, const char *remote_id, const char *email,
		  time_t expires);

/* LOCAL+TOKEN@domain built from reply_address (owned), or NULL when the
 * reply address is missing/malformed or the local part would exceed 64. */
char *token_address(const struct mf_config *cfg, const char *token);

/* The token in addr when addr is LOCAL+TOKEN@domain of reply_address
 * (case-insensitive), copied into out (outlen >= 64).  1 found, 0 not. */
int token_from_address(const struct mf_config *cfg, const char *addr, char *out, size_t outlen);

/* Pure decoding of a token string; 0, or -1 when it is not well formed. */
int token_decode(const char *token, struct token_raw *out);

/* Decodes and checks a token against the store and the secret.  On
 * TOKEN_OK and TOKEN_EXPIRED info is filled (the MAC was right); on
 * TOKEN_FORGED it is left empty.  The MAC comparison is constant-time. */
enum token_status token_verify(struct store *st, const unsigned char *secret, size_t secretlen,
			       const char *token, time_t now, struct token_info *info);

/* Message-IDs of the mail the gateway sent (table sent_ids), so that a
 * reply that lost its token is still tied to what it answers through
 * In-Reply-To/References.  Records message_id (without <>) of a mail sent
 * to email at `sent`: about the post (grp, remote_id) of a notification,
 * or (both NULL) a digest.  Kept once: recording it again changes
 * nothing.  Uses a statement kept with the connection (one per mail of a
 * digest run).  0, or -1 on a store error. */
int token_sent_id_record(struct store *st, const char *message_id, const char *grp,
			 const char *remote_id, const char *email, time_t sent);

/* Looks message_id up: 1 found, ti filled as token_verify fills it (kind
 * TOKEN_REPLY with grp and remote_id, else TOKEN_UNSUBSCRIBE; expires
 * left to the caller) and *sent set; 0 not found (also for NULL or on a
 * store error). */
int token_sent_id_find(struct store *st, const char *message_id, struct token_info *ti,
		       time_t *sent);

/* Retention: forgets the Message-IDs of mail sent before cutoff, inside
 * the caller's transaction.  Rows removed, or -1. */
int token_prune(struct store *st, time_t cutoff);

#endif
