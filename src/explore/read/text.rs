//! Text shaping for results: excerpts, and turning the engines' highlights into
//! safe HTML.
//!
//! The engines wrap matches in two private-use characters ([`MARK_OPEN`],
//! [`MARK_CLOSE`]); [`render_highlight`] HTML-escapes everything and only then turns
//! balanced sentinel pairs into `<mark>`/`</mark>`, so the only markup in the result
//! is ours.

/// Start of a match in engine output (private use, U+E000).
pub(super) const MARK_OPEN: char = '\u{E000}';
/// End of a match in engine output (private use, U+E001).
pub(super) const MARK_CLOSE: char = '\u{E001}';

/// Characters of body an excerpt shows at most (plus the ellipsis).
pub(super) const EXCERPT_CHARS: usize = 280;

/// The start of `body` (of which at least the first [`EXCERPT_CHARS`] + 1 characters
/// are given): whole if short, else cut at a word boundary when there is one in the
/// second half, with `…` appended.
pub(super) fn excerpt(body: &str) -> String {
    let Some((cut, _)) = body.char_indices().nth(EXCERPT_CHARS) else {
        return body.to_owned();
    };
    let head = &body[..cut];
    let min_word_cut = head.char_indices().nth(EXCERPT_CHARS / 2).map_or(0, |(i, _)| i);
    let head = match head.rfind(char::is_whitespace) {
        Some(space) if space >= min_word_cut => &head[..space],
        _ => head,
    };
    format!("{}…", head.trim_end())
}

fn is_sentinel(c: char) -> bool {
    c == MARK_OPEN || c == MARK_CLOSE
}

/// `highlighted` (engine output: `raw` with sentinels inserted) without the
/// sentinels that were already in `raw`, so only the engine's remain.
pub(super) fn drop_source_sentinels(raw: &str, highlighted: &str) -> String {
    if !raw.contains(is_sentinel) {
        return highlighted.to_owned();
    }
    // The output is `raw` with markers inserted: match raw's characters greedily
    // and keep the rest. Where a marker and a source sentinel are the same
    // character side by side it does not matter which one is taken for which.
    let mut raw_chars = raw.chars().peekable();
    let mut out = String::with_capacity(highlighted.len());
    for c in highlighted.chars() {
        if raw_chars.peek() == Some(&c) {
            raw_chars.next();
            if !is_sentinel(c) {
                out.push(c);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Plain text → HTML: escaped, with no marks (sentinels in the text are dropped).
pub(super) fn render_plain(text: &str) -> String {
    let unmarked: String = text.chars().filter(|c| !is_sentinel(*c)).collect();
    render_highlight(&unmarked)
}

/// Engine output → HTML: text escaped, balanced sentinel pairs as `<mark>…</mark>`,
/// stray sentinels dropped.
pub(super) fn render_highlight(highlighted: &str) -> String {
    let mut out = String::with_capacity(highlighted.len() + 32);
    let mut open = false;
    for c in highlighted.chars() {
        match c {
            MARK_OPEN if !open => {
                out.push_str("<mark>");
                open = true;
            }
            MARK_CLOSE if open => {
                out.push_str("</mark>");
                open = false;
            }
            MARK_OPEN | MARK_CLOSE => {}
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    if open {
        out.push_str("</mark>");
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn excerpts_cut_at_words() {
        assert_eq!(excerpt("short body"), "short body");
        let exact = "x".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let words = "word ".repeat(100);
        let e = excerpt(&words);
        assert!(e.ends_with("word…"), "{e}");
        assert!(e.chars().count() <= EXCERPT_CHARS + 1);
        let unbroken = "é".repeat(400);
        let e = excerpt(&unbroken);
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with("é…"));
    }

    #[test]
    fn plain_text_is_escaped_and_never_marked() {
        assert_eq!(render_plain("a<b> & \u{E000}c\u{E001}"), "a&lt;b&gt; &amp; c");
    }

    #[test]
    fn highlights_are_escaped_html() {
        let engine = format!("a <script>alert('x')</script> & {MARK_OPEN}deep{MARK_CLOSE} \"q\"");
        assert_eq!(
            render_highlight(&engine),
            "a &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; <mark>deep</mark> &quot;q&quot;"
        );
        assert_eq!(render_highlight(&format!("{MARK_CLOSE}a{MARK_OPEN}b")), "a<mark>b</mark>");
        let raw = format!("x{MARK_CLOSE}y {MARK_OPEN}z");
        let engine = format!("x{MARK_CLOSE}y {MARK_OPEN}{MARK_OPEN}z{MARK_CLOSE}");
        assert_eq!(render_highlight(&drop_source_sentinels(&raw, &engine)), "xy <mark>z</mark>");
        let raw = format!("{MARK_OPEN}a b");
        let engine = format!("{MARK_OPEN}a {MARK_OPEN}b{MARK_CLOSE}");
        assert_eq!(render_highlight(&drop_source_sentinels(&raw, &engine)), "a <mark>b</mark>");
    }

    proptest! {
        #[test]
        fn rendered_markup_is_only_balanced_marks(s in "[a-z<>&'\"\u{E000}\u{E001} ]{0,60}") {
            let html = render_highlight(&s);
            let without = html.replace("<mark>", "").replace("</mark>", "");
            prop_assert!(!without.contains('<') && !without.contains('>') && !without.contains('"'));
            prop_assert!(!without.contains(is_sentinel));
            prop_assert_eq!(html.matches("<mark>").count(), html.matches("</mark>").count());
        }

        #[test]
        fn excerpt_never_panics(s in "\\PC{0,400}") {
            let e = excerpt(&s);
            prop_assert!(e.chars().count() <= EXCERPT_CHARS + 1);
        }
    }
}
