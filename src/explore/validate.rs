//! Input rules for items, applied to API writes and imported lines alike, and the
//! content hash that makes re-imports idempotent.

use sha2::{Digest, Sha256};

use super::model::{FieldErrors, ItemInput, ItemPatch, Patch};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 500;
/// Largest body, in bytes.
pub const MAX_BODY_BYTES: usize = 100 * 1024;
/// Most tags per item.
pub const MAX_TAGS: usize = 20;
/// Longest id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Whether `id` is an acceptable item id: 1–128 bytes of letters, digits and `. _ - /`,
/// starting with a letter or digit (arXiv ids such as `cond-mat/9909265` included).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// Whether `code` is an acceptable tag or category code, e.g. `cs.CV`, `hep-th`,
/// `cond-mat.stat-mech`: 1–64 characters of letters, digits, `.` and `-`, starting
/// with a letter.
pub fn is_valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code.starts_with(|c: char| c.is_ascii_alphabetic())
        && code.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
}

fn check_text(errors: &mut FieldErrors, field: &str, value: &str, max_chars: usize) {
    let chars = value.chars().count();
    if value.trim().is_empty() {
        errors.insert(field.to_owned(), "must not be empty".to_owned());
    } else if chars > max_chars {
        errors.insert(field.to_owned(), format!("must be at most {max_chars} characters (got {chars})"));
    }
}

/// Checks every field of an item; all problems are reported at once.
pub fn validate_input(input: &ItemInput) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::new();
    if let Some(id) = &input.id
        && !is_valid_id(id)
    {
        errors.insert(
            "id".to_owned(),
            "must be 1–128 characters of letters, digits and . _ - /, starting with a letter or digit"
                .to_owned(),
        );
    }
    check_text(&mut errors, "title", &input.title, MAX_TITLE_CHARS);
    // U+E000 and U+E001 mark search matches internally; text may not carry them
    for (field, text) in [("title", &input.title), ("body", &input.body)] {
        if text.contains(['\u{E000}', '\u{E001}']) {
            errors.insert(
                field.to_owned(),
                "must not contain the reserved characters U+E000 or U+E001".to_owned(),
            );
        }
    }
    if input.body.len() > MAX_BODY_BYTES {
        errors.insert(
            "body".to_owned(),
            format!("must be at most {MAX_BODY_BYTES} bytes (got {})", input.body.len()),
        );
    }
    check_text(&mut errors, "category", &input.category, 200);
    check_text(&mut errors, "group", &input.group, 100);
    if !is_valid_code(&input.category_code) {
        errors.insert(
            "category_code".to_owned(),
            "must look like a category code such as cs.CV or hep-th (letters, digits, . and -)".to_owned(),
        );
    }
    if input.tags.len() > MAX_TAGS {
        errors.insert("tags".to_owned(), format!("at most {MAX_TAGS} tags (got {})", input.tags.len()));
    } else if let Some(bad) = input.tags.iter().find(|t| !is_valid_code(t)) {
        errors.insert("tags".to_owned(), format!("'{bad}' is not a valid tag (letters, digits, . and -)"));
    } else {
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = input.tags.iter().find(|t| !seen.insert(t.as_str())) {
            errors.insert("tags".to_owned(), format!("'{dup}' appears more than once"));
        }
    }
    if let Some(url) = &input.source_url
        && (url.len() > 2048 || !(url.starts_with("https://") || url.starts_with("http://")))
    {
        errors
            .insert("source_url".to_owned(), "must be an http(s) URL of at most 2048 characters".to_owned());
    }
    let year = chrono::Datelike::year(&input.published_at);
    if !(1900..=2200).contains(&year) {
        errors.insert("published_at".to_owned(), "must be a date between 1900 and 2200".to_owned());
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Applies a patch to an item's current fields and validates the result: the item the
/// patch would write, or every problem at once (`null` on a required field included).
pub fn merge_patch(current: ItemInput, patch: ItemPatch) -> Result<ItemInput, FieldErrors> {
    let mut nulls = FieldErrors::new();
    let merged = ItemInput {
        id: current.id,
        title: required(&mut nulls, "title", patch.title, current.title),
        body: clearable(patch.body, current.body, String::new()),
        category: required(&mut nulls, "category", patch.category, current.category),
        category_code: required(&mut nulls, "category_code", patch.category_code, current.category_code),
        group: required(&mut nulls, "group", patch.group, current.group),
        tags: clearable(patch.tags, current.tags, Vec::new()),
        source_url: clearable(patch.source_url.map_value(Some), current.source_url, None),
        published_at: required(&mut nulls, "published_at", patch.published_at, current.published_at),
    };
    let mut errors = validate_input(&ItemInput { id: None, ..merged.clone() }).err().unwrap_or_default();
    errors.extend(nulls);
    if errors.is_empty() { Ok(merged) } else { Err(errors) }
}

/// A field every item has: `null` is reported (and the current value kept, so that
/// the other fields can still be checked).
fn required<T>(nulls: &mut FieldErrors, field: &str, patch: Patch<T>, current: T) -> T {
    match patch {
        Patch::Absent => current,
        Patch::Value(value) => value,
        Patch::Null => {
            nulls.insert(field.to_owned(), "must not be null (leave it out to keep its value)".to_owned());
            current
        }
    }
}

/// A field that may be empty: `null` clears it.
fn clearable<T>(patch: Patch<T>, current: T, cleared: T) -> T {
    match patch {
        Patch::Absent => current,
        Patch::Null => cleared,
        Patch::Value(value) => value,
    }
}

/// Whether two inputs hold the same content (the id aside), so that writing one over
/// the other would change nothing. Publication times are compared to the microsecond,
/// the precision PostgreSQL stores.
pub fn same_content(a: &ItemInput, b: &ItemInput) -> bool {
    let micros = |t: &chrono::DateTime<chrono::Utc>| t.timestamp_micros();
    a.title == b.title
        && a.body == b.body
        && a.category == b.category
        && a.category_code == b.category_code
        && a.group == b.group
        && a.tags == b.tags
        && a.source_url == b.source_url
        && micros(&a.published_at) == micros(&b.published_at)
}

/// A stable hash of an item's content (not its id, views or version): equal
/// hashes mean a re-import has nothing to change.
pub fn content_hash(input: &ItemInput) -> String {
    let mut hasher = Sha256::new();
    for part in [&input.title, &input.body, &input.category, &input.category_code, &input.group] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    for tag in &input.tags {
        hasher.update(tag.as_bytes());
        hasher.update([1u8]);
    }
    hasher.update([0u8]);
    hasher.update(input.source_url.as_deref().unwrap_or("").as_bytes());
    hasher.update([0u8]);
    hasher.update(input.published_at.to_rfc3339().as_bytes());
    let digest = hasher.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn input() -> ItemInput {
        ItemInput {
            id: Some("cond-mat/9909265".into()),
            title: "Modeling Market Mechanism".into(),
            body: "Using the Minority Game".into(),
            category: "Statistical Mechanics".into(),
            category_code: "cond-mat.stat-mech".into(),
            group: "Physics".into(),
            tags: vec!["cond-mat.stat-mech".into(), "q-fin.TR".into()],
            source_url: Some("https://arxiv.org/abs/cond-mat/9909265".into()),
            published_at: chrono::Utc.with_ymd_and_hms(1999, 9, 17, 14, 39, 2).unwrap(),
        }
    }

    #[test]
    fn a_real_item_is_valid() {
        assert_eq!(validate_input(&input()), Ok(()));
    }

    #[test]
    fn every_bad_field_is_reported() {
        let mut bad = input();
        bad.id = Some("/leading-slash".into());
        bad.title = " ".into();
        bad.body = "x".repeat(MAX_BODY_BYTES + 1);
        bad.category_code = "cs CV".into();
        bad.tags = (0..21).map(|i| format!("t{i}")).collect();
        bad.source_url = Some("ftp://x".into());
        let errors = validate_input(&bad).unwrap_err();
        for field in ["id", "title", "body", "category_code", "tags", "source_url"] {
            assert!(errors.contains_key(field), "{field}: {errors:?}");
        }
        let mut long = input();
        long.title = "é".repeat(501);
        assert!(validate_input(&long).unwrap_err()["title"].contains("500"));
        let mut dup = input();
        dup.tags = vec!["cs.AI".into(), "cs.AI".into()];
        assert!(validate_input(&dup).unwrap_err()["tags"].contains("more than once"));
    }

    #[test]
    fn content_hash_ignores_id_and_tracks_content() {
        let a = input();
        let mut b = input();
        b.id = Some("other".into());
        assert_eq!(content_hash(&a), content_hash(&b));
        b.tags.push("cs.AI".into());
        assert_ne!(content_hash(&a), content_hash(&b));
        let mut c = input();
        c.title.push('!');
        assert_ne!(content_hash(&a), content_hash(&c));
    }

    #[test]
    fn patch_merges() {
        let patched = merge_patch(
            input(),
            ItemPatch { title: "New".to_owned().into(), source_url: Patch::Null, ..Default::default() },
        )
        .unwrap();
        assert_eq!(patched.title, "New");
        assert_eq!(patched.source_url, None);
        assert_eq!(patched.body, input().body);
        let cleared =
            merge_patch(input(), ItemPatch { body: Patch::Null, tags: Patch::Null, ..Default::default() })
                .unwrap();
        assert_eq!((cleared.body.as_str(), cleared.tags.len()), ("", 0));
        assert_eq!(merge_patch(input(), ItemPatch::default()).unwrap(), input());
    }

    #[test]
    fn null_on_a_required_field_is_reported_with_the_other_problems() {
        let patch = ItemPatch {
            title: Patch::Null,
            category: Patch::Null,
            category_code: Patch::Null,
            group: Patch::Null,
            published_at: Patch::Null,
            tags: vec!["not a tag".to_owned()].into(),
            ..Default::default()
        };
        let errors = merge_patch(input(), patch).unwrap_err();
        for field in ["title", "category", "category_code", "group", "published_at"] {
            assert!(errors[field].contains("null"), "{field}: {errors:?}");
        }
        assert!(errors["tags"].contains("not a valid tag"), "{errors:?}");
    }

    #[test]
    fn patch_fields_tell_null_from_absent() {
        let patch: ItemPatch = serde_json::from_str(r#"{"title": null, "body": "b"}"#).unwrap();
        assert_eq!((patch.title, patch.body), (Patch::Null, Patch::Value("b".to_owned())));
        assert_eq!(patch.tags, Patch::Absent);
        let back = serde_json::to_value(ItemPatch { source_url: Patch::Null, ..Default::default() }).unwrap();
        assert_eq!(back, serde_json::json!({ "source_url": null }));
        assert!(serde_json::from_str::<ItemPatch>(r#"{"id": "x"}"#).is_err());
    }

    #[test]
    fn same_content_ignores_the_id_and_sub_microsecond_times() {
        let mut other = input();
        other.id = None;
        other.published_at += chrono::Duration::nanoseconds(300);
        assert!(same_content(&input(), &other));
        other.tags.reverse();
        assert!(!same_content(&input(), &other), "tag order is content");
        let mut cleared = input();
        cleared.source_url = None;
        assert!(!same_content(&input(), &cleared));
    }

    #[test]
    fn ids_and_codes() {
        for ok in ["2506.20941", "cond-mat/9909265", "a", "x_y-z.1"] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["", "/x", "a b", "a?b", &"a".repeat(129)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
        for ok in ["cs.CV", "hep-th", "cond-mat.stat-mech", "q-fin.TR"] {
            assert!(is_valid_code(ok), "{ok}");
        }
        for bad in ["", "1cs", "cs CV", "cs/CV"] {
            assert!(!is_valid_code(bad), "{bad}");
        }
    }
}
