//! What a model reads of an item: its title and the start of its body, cut at a
//! word boundary, and the SHA-256 of exactly that text (`text_hash`). A stored
//! summary or embedding whose hash differs from the item's current one is stale.
//!
//! The embedding text is short: all-MiniLM-L6-v2 reads at most 256 word pieces
//! (about 1,000 characters of English), and the title with the opening of an
//! abstract says what a paper is about. The summary text is longer (the chat model
//! needs the substance) but bounded, so that a prompt costs about the same for
//! every item.

use sha2::{Digest, Sha256};

/// Most characters of an item an embedding reads (title included): about 130
/// tokens, the length all-MiniLM-L6-v2 was trained on; the title and the opening
/// of the abstract carry the topic, and the cost of a text grows with its length.
pub const EMBEDDING_MAX_CHARS: usize = 600;
/// Most characters of an item a summary reads (title included).
pub const SUMMARY_MAX_CHARS: usize = 1_500;

/// The fields of an item a model reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemText {
    pub id: String,
    pub title: String,
    pub body: String,
}

/// A text for a model with its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInput {
    pub text: String,
    /// [`text_hash`] of `text`.
    pub hash: String,
}

impl ModelInput {
    fn of(text: String) -> Self {
        let hash = text_hash(&text);
        Self { text, hash }
    }
}

impl ItemText {
    /// What the embedding model reads.
    pub fn embedding_input(&self) -> ModelInput {
        ModelInput::of(compose(&self.title, &self.body, EMBEDDING_MAX_CHARS))
    }

    /// What the chat model summarises.
    pub fn summary_input(&self) -> ModelInput {
        ModelInput::of(compose(&self.title, &self.body, SUMMARY_MAX_CHARS))
    }
}

/// `title`, a blank line, then as much of `body` as fits in `max_chars` characters
/// in all, with whitespace runs collapsed to one space, cut after a whole word. A
/// title longer than `max_chars` is cut the same way (its first word cut short when
/// even that does not fit) and leaves no room for the body.
pub fn compose(title: &str, body: &str, max_chars: usize) -> String {
    let title = collapse(title);
    let used = title.chars().count();
    if used > max_chars {
        return truncate_words(&title, max_chars, true).to_owned();
    }
    let separator = if title.is_empty() { "" } else { "\n\n" };
    let room = max_chars.saturating_sub(used + separator.chars().count());
    let body = collapse(body);
    let head = truncate_words(&body, room, false);
    if head.is_empty() {
        return title;
    }
    let mut text = title;
    text.push_str(separator);
    text.push_str(head);
    text
}

/// `text` with leading and trailing whitespace removed and every run of whitespace
/// inside made one space.
fn collapse(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The longest prefix of `text` (whose whitespace is single spaces) of at most
/// `max_chars` characters that ends after a whole word; when not even the first
/// word fits, that word cut at `max_chars` if `cut_word`, else nothing.
fn truncate_words(text: &str, max_chars: usize, cut_word: bool) -> &str {
    let Some((cut, _)) = text.char_indices().nth(max_chars) else {
        return text;
    };
    // `cut` is the first character left out: a space there ends a whole word
    if text[cut..].starts_with(' ') {
        return &text[..cut];
    }
    match text[..cut].rfind(' ') {
        Some(space) => &text[..space],
        None if cut_word => &text[..cut],
        None => "",
    }
}

/// SHA-256 of `text`, 64 lowercase hex digits.
pub fn text_hash(text: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_title_comes_first_then_the_body_cut_at_a_word() {
        assert_eq!(compose("Graph  nets", " We study\n graphs. ", 100), "Graph nets\n\nWe study graphs.");
        // 10 + 2 + "We study" (8) = 20: "graphs." does not fit
        assert_eq!(compose("Graph nets", "We study graphs.", 20), "Graph nets\n\nWe study");
        assert_eq!(compose("Graph nets", "We study graphs.", 21), "Graph nets\n\nWe study");
        assert_eq!(compose("Graph nets", "", 100), "Graph nets");
        assert_eq!(compose("", "Body only", 100), "Body only");
        // a title longer than the room is cut too, and leaves none for the body
        assert_eq!(compose("A very long title", "body", 8), "A very");
        assert_eq!(compose("A very long title", "body", 10), "A very");
        assert_eq!(compose("Supercalifragilistic", "body", 5), "Super");
        // a body word is never cut: no room for a whole one, no body
        assert_eq!(compose("Graph nets", "Supercalifragilistic", 20), "Graph nets");
    }

    #[test]
    fn the_hash_is_sha256_hex_and_follows_the_text() {
        assert_eq!(text_hash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let item = ItemText { id: "a".into(), title: "T".into(), body: "B".into() };
        let input = item.embedding_input();
        assert_eq!(input.text, "T\n\nB");
        assert_eq!(input.hash, text_hash("T\n\nB"));
        let edited = ItemText { body: "B2".into(), ..item.clone() };
        assert_ne!(edited.embedding_input().hash, input.hash);
        // whitespace alone does not change what the model reads, nor the hash
        let spaced = ItemText { body: " B \n".into(), ..item };
        assert_eq!(spaced.embedding_input().hash, input.hash);
    }

    #[test]
    fn a_long_abstract_is_bounded() {
        let item = ItemText { id: "a".into(), title: "Title".into(), body: "word ".repeat(2_000) };
        let embedding = item.embedding_input().text;
        let summary = item.summary_input().text;
        assert!(embedding.chars().count() <= EMBEDDING_MAX_CHARS);
        assert!(summary.chars().count() <= SUMMARY_MAX_CHARS);
        assert!(embedding.chars().count() > EMBEDDING_MAX_CHARS - 10, "the room is used");
        assert!(embedding.ends_with("word") && summary.starts_with("Title\n\nword"));
    }

    proptest! {
        #[test]
        fn a_composed_text_fits_and_is_a_prefix_of_the_whole(
            title in "[a-zé ]{0,40}",
            body in "[a-zé \n]{0,200}",
            max in 0usize..120,
        ) {
            let text = compose(&title, &body, max);
            prop_assert!(text.chars().count() <= max);
            let whole = compose(&title, &body, usize::MAX);
            prop_assert!(whole.starts_with(&text), "{text:?} is not a prefix of {whole:?}");
        }
    }
}
