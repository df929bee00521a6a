/* html.h — HTML mail bodies turned into readable plain text.
 *
 * Uses a real HTML parser (gumbo).  Quoted history containers (blockquote,
 * Gmail/Outlook/Yahoo/Thunderbird reply blocks) are rendered as "> " lines
 * so that the reply cleaner treats them like quoted plain text. */
#ifndef MAILFEED_HTML_H
#define MAILFEED_HTML_H

#include <stddef.h>

/* Largest text html_to_text produces; longer output is cut. */
#define HTML_TEXT_MAX (4u * 1024 * 1024)

/* Converts len bytes of UTF-8 HTML to text.  Never NULL; owned by caller. */
char *html_to_text(const char *html, size_t len);

#endif
