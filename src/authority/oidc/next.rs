//! Where the browser goes after signing in (`next=`): only a path on this site.

/// `raw` if it is a same-site relative path: one leading `/` followed by anything but another
/// `/` or a `\`, only printable ASCII, no `\` anywhere (browsers read `/\evil.example` as
/// `//evil.example`), at most 2048 bytes. Empty means `/`. `None` for everything else:
/// `//evil.example`, `https://evil.example`, `javascript:…`, `/\evil.example`.
pub fn safe_next(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return Some("/".to_owned());
    }
    let bytes = raw.as_bytes();
    let ok = bytes.len() <= 2048
        && bytes[0] == b'/'
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && bytes
            .iter()
            .all(|b| (0x21..=0x7e).contains(b) && *b != b'\\');
    ok.then(|| raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_same_site_paths_are_followed() {
        for good in ["/", "/settings", "/settings/api-keys?x=1#y", "/a/b//c"] {
            assert_eq!(safe_next(good).as_deref(), Some(good));
        }
        assert_eq!(safe_next("").as_deref(), Some("/"));
        for bad in [
            "//evil.example",
            "https://evil.example",
            "http://evil.example/x",
            "/\\evil.example",
            "\\\\evil.example",
            "/x\\y",
            "javascript:alert(1)",
            "settings",
            "/ space",
            "/\tx",
            "/é",
            "///evil.example",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(2048))), None);
    }
}
