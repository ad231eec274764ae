//! Names people read — user names and API-key names — have one spelling and can't impersonate
//! each other: they are NFC-normalised, may not hide characters (controls, zero-width and other
//! format characters, bidirectional overrides), and a new name whose confusable skeleton
//! (Unicode TR39: `admіn` with a Cyrillic `і` is `admin`) matches an existing one is refused.

use unicode_normalization::UnicodeNormalization as _;

/// The NFC form: `e` + combining acute and `é` are one name.
pub fn normalize(name: &str) -> String {
    name.nfc().collect()
}

/// Characters that change or hide what a name shows: controls and the format characters
/// (general category Cf) — zero-width spaces and joiners, bidirectional embeddings, overrides
/// and isolates, the BOM, soft hyphen, invisible operators, tags.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c as u32,
            0x00AD
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

/// True when `name` holds a character [`is_hidden`] refuses.
pub fn has_hidden(name: &str) -> bool {
    name.chars().any(is_hidden)
}

/// The TR39 confusable skeleton, case-folded: two names with the same skeleton look alike.
pub fn skeleton(name: &str) -> String {
    unicode_security::skeleton(&name.to_lowercase())
        .collect::<String>()
        .to_lowercase()
}

/// The first of `existing` that looks like `name` without being the same name up to case
/// (that one is a plain duplicate, which the store reports in its own words).
pub fn look_alike<'a>(name: &str, existing: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted = skeleton(name);
    let folded = name.to_lowercase();
    existing
        .into_iter()
        .find(|other| other.to_lowercase() != folded && skeleton(other) == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_and_hidden_characters_are_caught() {
        assert_eq!(look_alike("adm\u{0456}n", ["admin", "bob"]), Some("admin"));
        assert_eq!(
            look_alike("ADMIN", ["admin"]),
            None,
            "a duplicate, not a look-alike"
        );
        assert_eq!(look_alike("ADM\u{0406}N", ["admin"]), Some("admin"));
        assert_eq!(look_alike("alice", ["admin", "bob"]), None);
        assert_eq!(look_alike("admin", ["admin"]), None);
        assert!(has_hidden("ad\u{200B}min"));
        assert!(has_hidden("admin\u{202E}nimda"));
        assert!(has_hidden("a\u{2066}b"));
        assert!(!has_hidden("Ærøskøbing-ingest"));
        assert_eq!(normalize("e\u{0301}"), "\u{00E9}");
    }
}
