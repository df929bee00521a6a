/* jwt.h — RS256-signed JSON Web Tokens (RFC 7519/7515) for the OAuth 2.0
 * JWT bearer grant (RFC 7523) used by the Chatter backend. */
#ifndef MAILFEED_JWT_H
#define MAILFEED_JWT_H

#include <stddef.h>
#include <time.h>

struct jwt_key;

/* Loads an RSA private key (PEM, PKCS#1 or PKCS#8, unencrypted) from a secret
 * file that must not be group/world readable.  NULL with a message in err. */
struct jwt_key *jwt_key_load(const char *path, char *err, size_t errlen);
/* Same from PEM text in memory (tests, fuzzing). */
struct jwt_key *jwt_key_from_pem(const char *pem, size_t len, char *err, size_t errlen);
void jwt_key_free(struct jwt_key *k);

/* Unpadded base64url of n bytes.  Caller frees. */
char *jwt_base64url(const unsigned char *in, size_t n);

/* header.claims.signature with header {"alg":"RS256","typ":"JWT"} and the
 * given claims JSON text.  Caller frees; NULL with err on signing failure. */
char *jwt_sign_rs256(struct jwt_key *k, const char *claims_json, char *err, size_t errlen);

/* The JWT bearer assertion: iss = client_id, sub = username, aud = audience,
 * exp = now + lifetime seconds.  Caller frees; NULL with err. */
char *jwt_bearer_assertion(struct jwt_key *k, const char *client_id, const char *username,
			   const char *audience, time_t now, long lifetime, char *err,
			   size_t errlen);

#endif
