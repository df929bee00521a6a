/* test_html.c — HTML bodies as the text a feed reader sees: paragraphs,
 * lists, links, tables, and every kind of quoted-history container written
 * as "> " lines so that the reply cleaner removes it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/html.h"
#include "mailfeed/util.h"

static void check(const char *html, const char *want)
{
	char *got = html_to_text(html, strlen(html));
	assert_string_equal(got, want);
	free(got);
}

static void test_blocks(void **state)
{
	(void)state;
	check("<p>One</p><p>Two<br>three</p>", "One\n\nTwo\nthree\n");
	check("<div>a</div><div><br></div><div>b</div>", "a\n\nb\n");
	check("<h1>Title</h1><p>Body   with\n spaces</p>", "Title\n\nBody with spaces\n");
	check("<p>x</p><hr><p>y</p>", "x\n\n---\n\ny\n");
	check("x<hr>y", "x\n---\ny\n");
	check("<pre>  keep\n    this</pre>", "  keep\n    this\n");
}

static void test_skipped_and_entities(void **state)
{
	(void)state;
	check(
	    "<html><head><title>T</title><style>p{color:red}</style></head><body>"
	    "<script>alert(1)</script><p>caf&eacute; &amp; &lt;tea&gt;&nbsp;now</p></body></html>",
	    "café & <tea> now\n");
	check("<p>Logo: <img src=\"x.png\" alt=\"ACME\"> done</p>", "Logo: ACME done\n");
}

static void test_lists(void **state)
{
	(void)state;
	check("<ul><li>apples</li><li>pears</li></ul>", "- apples\n- pears\n");
	check("<ol><li>first</li><li>second</li></ol>", "1. first\n2. second\n");
	check("<p>Intro</p><ul><li>a<ul><li>nested</li></ul></li></ul>",
	      "Intro\n\n- a\n  - nested\n");
}

static void test_links(void **state)
{
	(void)state;
	check("<a href=\"https://example.org/doc\">the doc</a>",
	      "the doc (https://example.org/doc)\n");
	check("<a href=\"https://example.org/\">https://example.org</a>", "https://example.org\n");
	check("<a href=\"mailto:bob@example.org\">bob@example.org</a>", "bob@example.org\n");
	check("<a href=\"javascript:alert(1)\">click</a>", "click\n");
	check("<a href=\"https://example.org\"><img src=\"cid:x\"></a>", "https://example.org\n");
}

static void test_tables(void **state)
{
	(void)state;
	check("<table><tr><th>Name</th><th>Qty</th></tr><tr><td>Tea</td><td>2</td></tr></table>",
	      "Name | Qty\nTea | 2\n");
}

static void test_quoted_containers(void **state)
{
	(void)state;
	check("<p>New</p><blockquote type=\"cite\"><p>old</p><p>older</p></blockquote>",
	      "New\n> old\n>\n> older\n");
	check("<div>Yes.</div><div class=\"gmail_quote\"><div class=\"gmail_attr\">On Mon, Bob "
	      "wrote:<br></div><blockquote class=\"gmail_quote\">Question?</blockquote></div>",
	      "Yes.\n> On Mon, Bob wrote:\n> > Question?\n");
	check("<div>Sure</div><hr><div id=\"divRplyFwdMsg\"><b>From:</b> Bob<br><b>Sent:</b> "
	      "Monday</div><div>Old text</div><p>more old</p>",
	      "Sure\n---\n> From: Bob\n> Sent: Monday\n> Old text\n>\n> more old\n");
	check("<div>Ok</div><div id=\"appendonsend\"></div><div>From: Bob</div><div>old</div>",
	      "Ok\n> From: Bob\n> old\n");
	check("<div>Fine</div><div class=\"yahoo_quoted\"><div>On Monday Bob wrote:</div>"
	      "<div>old</div></div>",
	      "Fine\n> On Monday Bob wrote:\n> old\n");
	check("<p>Thanks</p><div id=\"OLK_SRC_BODY_SECTION\"><div>From: Bob</div>old</div>",
	      "Thanks\n> From: Bob\n> old\n");
	check("<p>Agreed</p><div class=\"moz-cite-prefix\">On 1/2/26 Bob wrote:<br></div>"
	      "<blockquote type=\"cite\">old</blockquote>",
	      "Agreed\n> On 1/2/26 Bob wrote:\n> old\n");
}

static void test_hostile(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	for (int i = 0; i < 5000; i++)
		buf_puts(&b, "<div><blockquote>");
	buf_puts(&b, "deep");
	char *t = html_to_text(b.data, b.len);
	assert_non_null(strstr(t, "deep"));
	free(t);
	buf_free(&b);
	t = html_to_text("", 0);
	assert_string_equal(t, "");
	free(t);
	t = html_to_text("<p>\x01\xff<", 5);
	assert_non_null(t);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_blocks),  cmocka_unit_test(test_skipped_and_entities),
	    cmocka_unit_test(test_lists),   cmocka_unit_test(test_links),
	    cmocka_unit_test(test_tables),  cmocka_unit_test(test_quoted_containers),
	    cmocka_unit_test(test_hostile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
