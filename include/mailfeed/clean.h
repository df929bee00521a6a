/* clean.h — separating what the sender wrote now from quoted history and
 * signatures.  Nothing is thrown away: text + removed hold every line of
 * the input (trimming is transparent). */
#ifndef MAILFEED_CLEAN_H
#define MAILFEED_CLEAN_H

struct clean_result {
	char *text;    /* the new text, trailing blank lines removed */
	char *removed; /* quoted history and signature, "" when none */
};

/* text: UTF-8 plain text (HTML already turned into text, with quoted HTML
 * blocks rendered as "> " lines).  sender_name may be NULL; it helps find a
 * signature that starts with the sender's name.  Fills out (owned). */
void clean_reply(const char *text, const char *sender_name, struct clean_result *out);
void clean_result_free(struct clean_result *r);

#endif
