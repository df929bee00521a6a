/* test_mattermost_escape.c — what a sender writes reaches Mattermost as
 * text: no heading, hidden link, remote image or channel-wide mention
 * comes out of a mail, while plain URLs stay links and the mapping can
 * allow mentions and images on purpose. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/feed.h"

static void check(const char *in, int mentions, int images, const char *want)
{
	char *out = feed_mattermost_escape(in, mentions, images);
	int same = strcmp(out, want) == 0;
	if (!same)
		print_error("escaped: %s\nwanted:  %s\n", out, want);
	free(out);
	assert_true(same);
}

static void test_markdown_is_escaped(void **state)
{
	(void)state;
	check("# Urgent\n> quoted\n- item\n1. first\n---", 0, 0,
	      "\\# Urgent\n\\> quoted\n\\- item\n1\\. first\n\\---");
	check("Click [here](http://evil.example/login) *now*", 0, 0,
	      "Click \\[here\\](http://evil.example/login) \\*now\\*");
	check("![pixel](https://tracker.example/p.png?id=1)", 0, 0,
	      "\\!\\[pixel\\](https://tracker.example/p.png?id=1)");
	check("a_b `code` ~~x~~ | t | <b> $x$ \\", 0, 0,
	      "a\\_b \\`code\\` \\~\\~x\\~\\~ \\| t \\| \\<b\\> \\$x\\$ \\\\");
	/* plain URLs stay links; Markdown glued to them does not get through */
	check("see https://example.org/a_b?x=1&y=2 ok", 0, 0, "see https://example.org/a_b?x=1&y=2 ok");
	check("http://a![x](http://evil/p.png)", 0, 0, "http://a!\\[x\\](http://evil/p.png)");
	check("", 0, 0, "");
	check(NULL, 0, 0, "");
}

static void test_channel_mentions_and_images(void **state)
{
	(void)state;
	check("@channel @ALL hi @here: @channels @alice", 0, 0,
	      "@\xe2\x80\x8b" "channel @\xe2\x80\x8b" "ALL hi @\xe2\x80\x8b"
	      "here: @channels @alice");
	check("@channel", 1, 0, "@channel");
	check("![logo](https://example.org/l.png) x", 0, 1, "![logo](https://example.org/l.png) x");
	check("![logo](javascript:alert(1))", 0, 1, "\\!\\[logo\\](javascript:alert(1))");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_markdown_is_escaped),
	    cmocka_unit_test(test_channel_mentions_and_images),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
