//! JSON for machines (`bootherd status --json`, `bootherd client --json`). The objects are
//! small, flat and fixed, so they are written by hand; this is the escaping they share.

/// A JSON string literal: ids, addresses and reasons are plain text, but a quote, backslash
/// or control character in one must not break the document.
pub(crate) fn string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// [`string`], or `null` for none.
pub(crate) fn string_or_null(s: Option<&str>) -> String {
    s.map_or("null".into(), string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(string_or_null(None), "null");
        assert_eq!(string_or_null(Some("é")), "\"é\"");
    }
}
