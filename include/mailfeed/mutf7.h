/* mutf7.h — folder names as IMAP servers spell them: the config holds
 * UTF-8 ("Förderung"), the protocol modified UTF-7 ("F&APY-rderung",
 * RFC 3501 section 5.1.3). */
#ifndef MAILFEED_MUTF7_H
#define MAILFEED_MUTF7_H

/* The modified UTF-7 form of a UTF-8 name (caller frees), or NULL when the
 * name is not valid UTF-8 (overlong forms, surrogates, beyond U+10FFFF). */
char *mutf7_encode(const char *utf8);
/* The UTF-8 form of a modified UTF-7 name (caller frees), or NULL when it
 * is not well-formed. */
char *mutf7_decode(const char *mutf7);

#endif
